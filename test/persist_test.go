package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/corednstest"
	"github.com/healthswitch/healthswitch/report"
)

// replica is one bin/coredns process at fixed ports, so it can be killed
// and started again at the same addresses.
type replica struct {
	t        testing.TB
	name     string
	corefile string // path
	dns, api string
	metrics  string
	mu       sync.Mutex
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

// newReplica writes corefile (see writeCorefile) and returns the replica,
// not started.
func newReplica(t testing.TB, name, corefile string) *replica {
	t.Helper()
	return newReplicaAt(t, name, corefile, freePort(t))
}

// newReplicaAt is newReplica with the push API port chosen by the caller.
func newReplicaAt(t testing.TB, name, corefile string, apiPort int) *replica {
	t.Helper()
	path, dns, metrics := writeCorefile(t, corefile, apiPort)
	r := &replica{t: t, name: name, corefile: path, dns: dns,
		api: fmt.Sprintf("http://127.0.0.1:%d", apiPort), metrics: metrics, log: &bytes.Buffer{}}
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, r.output())
		}
	})
	return r
}

// start runs the process and returns at once.
func (r *replica) start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmd = exec.Command(realBinary(r.t, "coredns"), "-conf", r.corefile)
	r.cmd.Stdout, r.cmd.Stderr = &lockedWriter{mu: &r.mu, w: r.log}, &lockedWriter{mu: &r.mu, w: r.log}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
}

// startAndWait starts the process and waits until its DNS port and push
// API answer.
func (r *replica) startAndWait() {
	r.t.Helper()
	r.start()
	waitFor(r.t, 15*time.Second, r.name+" to answer", answering(r.api, r.dns))
}

// kill sends SIGKILL and reaps the process: nothing is flushed.
func (r *replica) kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
}

func (r *replica) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// statusDoc is the part of /v1/status these tests read.
type statusDoc struct {
	Clusters []struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		Reason  string `json:"reason"`
		Drained bool   `json:"drained"`
		Probe   struct {
			Signal string `json:"signal"`
		} `json:"probe"`
	} `json:"clusters"`
	Store *struct {
		Kind      string `json:"kind"`
		Connected bool   `json:"connected"`
		Pending   bool   `json:"pending"`
		Corrupt   string `json:"corrupt"`
		Revision  int64  `json:"revision"`
		LastError string `json:"last_error"`
		Replicas  []struct {
			Replica string `json:"replica"`
			Epoch   uint64 `json:"epoch"`
		} `json:"replicas"`
		PerReplica []string `json:"per_replica"`
	} `json:"store"`
}

func (r *replica) status() (*statusDoc, error) {
	resp, err := http.Get(r.api + "/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var doc statusDoc
	return &doc, json.NewDecoder(resp.Body).Decode(&doc)
}

func (d *statusDoc) state(cluster string) string {
	for _, c := range d.Clusters {
		if c.Name == cluster {
			return c.State
		}
	}
	return ""
}

// signedRequest is one signed POST, kept so it can be sent again as is.
type signedRequest struct {
	path   string
	body   []byte
	ts     string
	sig    string
	signed time.Time
}

func signRequest(path string, body, key []byte, at time.Time) signedRequest {
	ts, sig := report.Sign(key, at, body)
	return signedRequest{path: path, body: body, ts: ts, sig: sig, signed: at}
}

// send posts the request to api and returns the status.
func (s signedRequest) send(api string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, api+s.path, bytes.NewReader(s.body))
	if err != nil {
		return 0, err
	}
	req.Header.Set(report.HeaderTimestamp, s.ts)
	req.Header.Set(report.HeaderSignature, s.sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// opKey signs operator requests in these tests.
const opKey = "admin-key-0123456789abcdef"

func drainRequest(action, cluster string, at time.Time) signedRequest {
	body := []byte(fmt.Sprintf(`{"action":%q,"cluster":%q,"reason":"maintenance"}`, action, cluster))
	return signRequest("/v1/clusters/"+cluster+"/"+action, body, []byte(opKey), at)
}

// reportRequest is a signed sidecar report of cluster, as bytes on the wire.
func reportRequest(t testing.TB, cluster, key, boot string, seq uint64, healthy bool) signedRequest {
	now := time.Now()
	r := report.Report{Version: report.Version, Cluster: cluster, BootID: boot, Sequence: seq,
		SentAt: now.UTC(), Healthy: healthy, IntervalMS: 100,
		Checks: []report.Check{{Name: "web", Kind: "http", Healthy: healthy, Critical: true, ObservedAt: now.UTC()}}}
	body, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return signRequest("/v1/report", body, []byte(key), now)
}

// queryLoop asks addr for name over raw UDP, pause between answers (0: as
// fast as they come), from before the server's port opens until stop is
// closed, and returns every answer's addresses, sorted (timeouts and
// refusals are not answers).
func queryLoop(addr, name string, pause time.Duration, stop <-chan struct{}) <-chan []string {
	out := make(chan []string, 1)
	go func() {
		var answers []string
		c := &dns.Client{Net: "udp", Timeout: 50 * time.Millisecond}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		for {
			select {
			case <-stop:
				out <- answers
				return
			default:
			}
			r, _, err := c.Exchange(m, addr)
			if err != nil || r.Rcode != dns.RcodeSuccess {
				time.Sleep(time.Millisecond) // port not open yet: the kernel refuses at once
				continue
			}
			var ips []string
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					ips = append(ips, a.A.String())
				}
			}
			sort.Strings(ips)
			answers = append(answers, strings.Join(ips, " "))
			if pause > 0 {
				time.Sleep(pause)
			}
		}
	}()
	return out
}

func stateCorefile(t *testing.T, statePath string) string {
	east, west := keyFiles(t)
	admin := filepath.Join(t.TempDir(), "admin.key")
	os.WriteFile(admin, []byte(opKey+"\n"), 0o600)
	return `svc1.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file ` + east + `
        }
        cluster west 127.0.0.12 {
            key_file ` + west + `
        }
        cluster north 127.0.0.13
        listen 127.0.0.1:APIPORT
        admin_key_file ` + admin + `
        stale 2s
        state ` + statePath + `
    }
}
`
}

// Issue 10: drain a cluster, let another go down, kill -9 the server and
// start it again: not one answer from the moment its port opens includes
// the drained cluster or the down one; the down one comes back with a fresh
// signal only; operator requests and reports replayed after the restart are
// refused.
func TestStateFileSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts CoreDNS twice")
	}
	statePath := filepath.Join(t.TempDir(), "state", "state.json")
	r := newReplica(t, "dns", stateCorefile(t, statePath))
	r.startAndWait()

	east, west := newPusher("east", eastKey), newPusher("west", westKey)
	for _, c := range []struct {
		p       *pusher
		healthy bool
	}{{east, true}, {west, true}} {
		if code, err := c.p.push(r.api, c.healthy); code != 204 {
			t.Fatalf("report: %d %v", code, err)
		}
	}
	westDown := reportRequest(t, "west", westKey, "b2", 1, false)
	if code, err := westDown.send(r.api); code != 204 {
		t.Fatalf("west down report: %d %v", code, err)
	}
	drain := drainRequest("drain", "east", time.Now())
	if code, err := drain.send(r.api); code != 200 {
		t.Fatalf("drain: %d %v", code, err)
	}
	if got := answerSet(r.dns, "svc1.net."); got != "127.0.0.13" {
		t.Fatalf("before the kill: %q, want only north", got)
	}
	// The drain is on disk when it is answered; a report within
	// milliseconds (the writer coalesces): wait for that, not longer.
	waitFor(t, 5*time.Second, "the state file written", func() bool {
		st, err := r.status()
		return err == nil && st.Store != nil && !st.Store.Pending
	})

	r.kill()
	stop := make(chan struct{})
	answers := queryLoop(r.dns, "svc1.net.", 0, stop)
	r.start()
	waitFor(t, 15*time.Second, "the restarted server", answering(r.api, r.dns))
	// Past the restored signal's stale time too: still down, no fresh signal.
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	got := <-answers
	if len(got) < 20 {
		t.Fatalf("only %d answers after the restart", len(got))
	}
	for i, a := range got {
		if a != "127.0.0.13" {
			t.Fatalf("answer %d of %d after the restart: %q, want only north (east drained, west down)", i, len(got), a)
		}
	}
	t.Logf("%d answers after the restart, every one north only", len(got))
	st, _ := r.status()
	if st.state("east") != "drained" || st.state("west") != "down" {
		t.Errorf("after restart: east %s, west %s", st.state("east"), st.state("west"))
	}

	// Replays after the restart are refused: the fences were restored.
	if code, err := drain.send(r.api); code != 409 {
		t.Errorf("drain replayed after the restart: %d %v, want 409", code, err)
	}
	if code, err := westDown.send(r.api); code != 409 {
		t.Errorf("report replayed after the restart: %d %v, want 409", code, err)
	}
	// A fresh signal brings west back.
	if code, err := reportRequest(t, "west", westKey, "b2", 2, true).send(r.api); code != 204 {
		t.Fatalf("fresh west report: %d %v", code, err)
	}
	waitFor(t, 5*time.Second, "west answered after a fresh healthy report", func() bool {
		return answerSet(r.dns, "svc1.net.") == "127.0.0.12 127.0.0.13"
	})
	if code, err := drainRequest("undrain", "east", time.Now()).send(r.api); code != 200 {
		t.Fatalf("undrain: %d %v", code, err)
	}
	if code, _ := east.push(r.api, true); code != 204 {
		t.Fatalf("east report: %d", code)
	}
	waitFor(t, 5*time.Second, "east answered after undrain", func() bool {
		return answerSet(r.dns, "svc1.net.") == "127.0.0.11 127.0.0.12 127.0.0.13"
	})
}

// A state file that cannot be read: the server starts anyway, with empty
// state; the file is kept aside; the log and the metric say so.
func TestStateFileCorruptStartsAnyway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts CoreDNS")
	}
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")
	if err := os.WriteFile(statePath, []byte(`{"version":1,"clusters":{"east":{"drain":`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, "dns", stateCorefile(t, statePath))
	r.startAndWait()
	moved, _ := filepath.Glob(statePath + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("corrupt file kept aside: %v", moved)
	}
	if b, _ := os.ReadFile(moved[0]); !strings.HasPrefix(string(b), `{"version":1`) {
		t.Errorf("the kept file is not the corrupt one: %q", b)
	}
	if !strings.Contains(r.output(), "STATE FILE CORRUPT") {
		t.Errorf("the log does not say the state file was corrupt")
	}
	m := metrics(t, &realServer{metrics: r.metrics})
	if !strings.Contains(m, "coredns_healthswitch_store_corrupt_total 1") {
		t.Errorf("corrupt metric:\n%s", grepLines(m, "store_"))
	}
	st, err := r.status()
	if err != nil || st.Store == nil || st.Store.Corrupt != moved[0] || st.Store.Kind != "file" {
		t.Errorf("status store: %+v %v", st.Store, err)
	}
	if got := answerSet(r.dns, "svc1.net."); got != "127.0.0.11 127.0.0.12 127.0.0.13" {
		t.Errorf("answers with empty state: %q", got)
	}
	// And it writes a good file again.
	if code, err := drainRequest("drain", "east", time.Now()).send(r.api); code != 200 {
		t.Fatalf("drain: %d %v", code, err)
	}
	b, err := os.ReadFile(statePath)
	if err != nil || !strings.Contains(string(b), `"drained": true`) {
		t.Errorf("state file after a drain: %s %v", b, err)
	}
}

// A reload hands the open state file to the new instance: a drain made
// after a good reload and after a failed one is written to the file, which
// the next process loads.
func TestStateFileAcrossReloads(t *testing.T) {
	east, west := keyFiles(t)
	admin := filepath.Join(t.TempDir(), "admin.key")
	os.WriteFile(admin, []byte(opKey), 0o600)
	statePath := filepath.Join(t.TempDir(), "state.json")
	dnsPort, apiPort := freePort(t), freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	corefile := func(extra string) string {
		return reloadCorefile(t, east, west, admin, dnsPort, apiPort, "state "+statePath+"\n"+extra)
	}
	s := corednstest.Start(t, corefile(""))
	if code, err := drainRequest("drain", "east", time.Now()).send(api); code != 200 {
		t.Fatalf("drain: %d %v", code, err)
	}
	if err := s.Reload(corefile("ttl 9")); err != nil {
		t.Fatalf("good reload: %v", err)
	}
	if err := s.Reload(corefile("ttl many")); err == nil {
		t.Fatal("bad reload: no error")
	}
	if code, err := drainRequest("drain", "west", time.Now()).send(api); code != 200 {
		t.Fatalf("drain after the reloads: %d %v", code, err)
	}
	b, err := os.ReadFile(statePath)
	if err != nil || strings.Count(string(b), `"drained": true`) != 2 {
		t.Fatalf("state file after reloads (a closed store would have missed the second drain):\n%s %v", b, err)
	}
	s.Stop()
	s = corednstest.Start(t, corefile(""))
	defer s.Stop()
	resp, err := http.Get(api + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc statusDoc
	json.NewDecoder(resp.Body).Decode(&doc)
	if doc.state("east") != "drained" || doc.state("west") != "drained" {
		t.Errorf("after a new start: east %s, west %s; want both drained", doc.state("east"), doc.state("west"))
	}
}
