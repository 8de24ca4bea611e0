package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
	"github.com/healthswitch/healthswitch/sidecar"
)

// echoBackend is one of the cluster's servers behind HAProxy: it echoes
// and counts the connections it accepts.
type echoBackend struct {
	ln       net.Listener
	accepted atomic.Int64
}

func startEchoBackend(tb testing.TB) *echoBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	e := &echoBackend{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return e
}

// echo sends msg on conn and reads it back.
func echo(conn net.Conn, msg string) error {
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, msg+"\n"); err != nil {
		return err
	}
	buf := make([]byte, len(msg)+1)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != msg+"\n" {
		return fmt.Errorf("echoed %q, want %q", buf, msg+"\n")
	}
	return nil
}

// newConnectionEchoes opens a fresh connection through addr and says
// whether it reached an echo server.
func newConnectionEchoes(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	return echo(conn, "new")
}

// ingressSidecar is bin/healthswitch-sidecar for cluster east.
type ingressSidecar struct{ url string }

// startIngressSidecar runs the sidecar with config, in which LISTEN is
// replaced by its address, and waits until it serves.
func startIngressSidecar(tb testing.TB, config string) *ingressSidecar {
	tb.Helper()
	dir := tb.TempDir()
	os.WriteFile(filepath.Join(dir, "k.key"), []byte(eastKey+"\n"), 0o600)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(tb))
	path := filepath.Join(dir, "sidecar.yaml")
	os.WriteFile(path, []byte(strings.ReplaceAll(config, "LISTEN", listen)), 0o600)
	testutil.StartLogged(tb, "sidecar", exec.Command(realBinary(tb, "healthswitch-sidecar"), "-config", path))
	s := &ingressSidecar{url: "http://" + listen}
	testutil.WaitFor(tb, 5*time.Second, "the sidecar to serve", func() bool {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return s
}

func (s *ingressSidecar) ingress(tb testing.TB) sidecar.IngressStatus {
	tb.Helper()
	var st sidecar.Status
	resp, err := http.Get(s.url + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		tb.Fatal(err)
	}
	if st.Ingress == nil {
		tb.Fatal("sidecar /status has no ingress section")
	}
	return *st.Ingress
}

// settled waits until the sidecar's /status shows the ingress in state (the
// actions finish just before their results are recorded) and returns it.
func (s *ingressSidecar) settled(tb testing.TB, state string) sidecar.IngressStatus {
	tb.Helper()
	var st sidecar.IngressStatus
	testutil.WaitFor(tb, 2*time.Second, "sidecar /status: ingress "+state, func() bool {
		st = s.ingress(tb)
		return st.State == state
	})
	return st
}

// ingressCorefile is a block with cluster east notifying notifyURL, and
// west; the push API on APIPORT.
func ingressCorefile(tb testing.TB, notifyURL string) string {
	dir := tb.TempDir()
	east, west := filepath.Join(dir, "east.key"), filepath.Join(dir, "west.key")
	os.WriteFile(east, []byte(eastKey+"\n"), 0o600)
	os.WriteFile(west, []byte(westKey+"\n"), 0o600)
	return fmt.Sprintf(`svc1.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file %s
            notify %s
        }
        cluster west 127.0.0.12 {
            key_file %s
        }
        listen 127.0.0.1:APIPORT
        stale 5s
    }
}
`, east, notifyURL, west)
}

// notifyTap sits between the plugin and the sidecar and keeps a copy of
// every notification, so the test can replay a genuine one.
type notifyTap struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []tapped
}

type tapped struct {
	body    []byte
	ts, sig string
	status  int
}

func newNotifyTap(tb testing.TB, target string) *notifyTap {
	n := &notifyTap{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts, sig := r.Header.Get(report.HeaderTimestamp), r.Header.Get(report.HeaderSignature)
		code, answer := postNotification(target, body, ts, sig)
		n.mu.Lock()
		n.got = append(n.got, tapped{body: body, ts: ts, sig: sig, status: code})
		n.mu.Unlock()
		w.WriteHeader(code)
		w.Write(answer)
	}))
	tb.Cleanup(n.srv.Close)
	return n
}

// applied returns the first notification of action the sidecar applied.
func (n *notifyTap) applied(action string) (tapped, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.got {
		if t.status == 200 && bytes.Contains(t.body, []byte(`"action":"`+action+`"`)) {
			return t, true
		}
	}
	return tapped{}, false
}

func postNotification(url string, body []byte, ts, sig string) (int, []byte) {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set(report.HeaderTimestamp, ts)
	req.Header.Set(report.HeaderSignature, sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return http.StatusBadGateway, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// The whole path with real parts: the cluster's health endpoint fails, the
// sidecar reports it, bin/coredns stops answering with the cluster and
// notifies the sidecar, which drains the servers of a real HAProxy. New
// connections through HAProxy no longer reach the backends, one opened
// before goes on; recovery readies them again. A replayed or forged
// notification changes nothing.
func TestIngressHAProxyEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs haproxy, coredns and the sidecar")
	}
	b1, b2 := startEchoBackend(t), startEchoBackend(t)
	lb := testutil.StartHAProxy(t, b1.ln.Addr().String(), b2.ln.Addr().String())
	health := &checkedServer{addr: "127.0.0.1:0"}
	health.start(t)
	defer health.kill()

	apiPort := freePort(t)
	sc := startIngressSidecar(t, fmt.Sprintf(`cluster: east
key_file: k.key
report_to: [http://127.0.0.1:%d]
listen: LISTEN
checks:
  - {name: web, http: {url: 'http://%s/healthz'}}
ingress:
  - haproxy: {socket: %s, backends: [web]}
`, apiPort, health.addr, lb.Socket))
	tap := newNotifyTap(t, sc.url+"/v1/distribution")
	dns := realCoreDNSOn(t, ingressCorefile(t, tap.srv.URL), apiPort)

	ready := "s1=no check s2=no check"
	testutil.WaitFor(t, 5*time.Second, "east answered and its ingress told to serve", func() bool {
		return answerSet(dns.dns, "svc1.net.") == "127.0.0.11 127.0.0.12" && sc.ingress(t).State == "serving"
	})
	if got := lb.Statuses(t); got != ready {
		t.Fatalf("haproxy servers at the start: %s", got)
	}
	before, err := net.DialTimeout("tcp", lb.Front, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := echo(before, "before"); err != nil {
		t.Fatalf("connection through haproxy: %v", err)
	}

	health.kill()
	testutil.WaitFor(t, 3*time.Second, "haproxy's servers draining", func() bool { return lb.Statuses(t) == "s1=DRAIN s2=DRAIN" })
	if got := answerSet(dns.dns, "svc1.net."); got != "127.0.0.12" {
		t.Errorf("DNS answer after east failed: %q", got)
	}
	accepted := b1.accepted.Load() + b2.accepted.Load()
	if err := newConnectionEchoes(lb.Front); err == nil {
		t.Error("a new connection through the drained haproxy still reached a backend")
	} else {
		t.Logf("new connection while drained: %v", err)
	}
	if n := b1.accepted.Load() + b2.accepted.Load(); n != accepted {
		t.Errorf("backends accepted %d new connections while drained", n-accepted)
	}
	if err := echo(before, "still here"); err != nil {
		t.Errorf("the connection opened before the stop broke: %v", err)
	}
	st := sc.settled(t, "stopped")
	if st.State != "stopped" || st.Last == nil || st.Last.Action != "stop" || len(st.Actions) != 1 || !st.Actions[0].OK {
		t.Errorf("sidecar status after the stop: %+v", st)
	}

	health.start(t)
	testutil.WaitFor(t, 3*time.Second, "haproxy's servers ready again", func() bool { return lb.Statuses(t) == ready })
	if err := newConnectionEchoes(lb.Front); err != nil {
		t.Errorf("new connection after the resume: %v", err)
	}
	if err := echo(before, "after"); err != nil {
		t.Errorf("the old connection after the resume: %v", err)
	}

	stop, ok := tap.applied("stop")
	if !ok {
		t.Fatal("the tap saw no applied stop")
	}
	forgedBody := bytes.Replace(stop.body, []byte(`"action":"stop"`), []byte(`"action":"stop" `), 1)
	wts, wsig := report.Sign([]byte(westKey), time.Now(), stop.body)
	for _, tc := range []struct {
		name, ts, sig string
		body          []byte
		want          int
	}{
		{"replayed stop", stop.ts, stop.sig, stop.body, 409},
		{"altered body", stop.ts, stop.sig, forgedBody, 401},
		{"signed with another cluster's key", wts, wsig, stop.body, 401},
	} {
		if code, answer := postNotification(sc.url+"/v1/distribution", tc.body, tc.ts, tc.sig); code != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, code, tc.want, answer)
		}
		if got := lb.Statuses(t); got != ready {
			t.Errorf("%s changed haproxy's servers: %s", tc.name, got)
		}
	}
	if err := newConnectionEchoes(lb.Front); err != nil {
		t.Errorf("new connection after the refused notifications: %v", err)
	}
}

// The same path with the other two kinds: an HTTP action against a stand-in
// of Envoy's admin API, and a script that writes a file.
func TestIngressHTTPAndExecEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs coredns and the sidecar")
	}
	var mu sync.Mutex
	var envoyCalls []string
	envoyStandIn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		envoyCalls = append(envoyCalls, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Write([]byte("OK\n"))
	}))
	defer envoyStandIn.Close()
	calls := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(envoyCalls, ", ") }
	dir := t.TempDir()
	file, script := filepath.Join(dir, "lb-state"), filepath.Join(dir, "lb.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $HEALTHSWITCH_CLUSTER $HEALTHSWITCH_ACTION\" >> "+file+"\n"), 0o755)
	lines := func() string { b, _ := os.ReadFile(file); return strings.TrimSpace(string(b)) }
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer sink.Close()

	sc := startIngressSidecar(t, fmt.Sprintf(`cluster: east
key_file: k.key
report_to: [%s]
listen: LISTEN
checks:
  - {name: up, exec: {command: [/bin/true]}}
ingress:
  - http: {stop: '%[2]s/healthcheck/fail', resume: '%[2]s/healthcheck/ok'}
  - exec: {stop: [%[3]s, down], resume: [%[3]s, up]}
`, sink.URL, envoyStandIn.URL, script))
	dns := realCoreDNS(t, ingressCorefile(t, sc.url+"/v1/distribution"))
	east := newPusher("east", eastKey)

	if code, err := east.push(dns.api, true); code != 204 {
		t.Fatalf("healthy report: %d %v", code, err)
	}
	applied := func(what, wantLines, wantCalls string) {
		t.Helper()
		testutil.WaitFor(t, 3*time.Second, what, func() bool { return lines() == wantLines && calls() == wantCalls })
	}
	applied("resume applied", "up east resume", "POST /healthcheck/ok")
	if code, err := east.push(dns.api, false); code != 204 {
		t.Fatalf("unhealthy report: %d %v", code, err)
	}
	applied("stop applied", "up east resume\ndown east stop", "POST /healthcheck/ok, POST /healthcheck/fail")
	if st := sc.settled(t, "stopped"); len(st.Actions) != 2 || !st.Actions[0].OK || !st.Actions[1].OK {
		t.Errorf("sidecar status: %+v", st)
	}
	if code, err := east.push(dns.api, true); code != 204 {
		t.Fatalf("healthy report: %d %v", code, err)
	}
	applied("resume applied again", "up east resume\ndown east stop\nup east resume", "POST /healthcheck/ok, POST /healthcheck/fail, POST /healthcheck/ok")
}

// startEpochLogSidecar runs a sidecar whose exec action appends "stop N" or
// "resume N" (N: the notification's epoch) to a file; last reads the last line.
func startEpochLogSidecar(t *testing.T) (sc *ingressSidecar, last func() string) {
	file := filepath.Join(t.TempDir(), "lb-state")
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	t.Cleanup(sink.Close)
	sc = startIngressSidecar(t, fmt.Sprintf(`cluster: east
key_file: k.key
report_to: [%s]
listen: LISTEN
checks:
  - {name: up, exec: {command: [/bin/true]}, interval: 1s}
ingress:
  - exec: {stop: [/bin/sh, -c, 'echo "stop $HEALTHSWITCH_EPOCH" >> %[2]s'], resume: [/bin/sh, -c, 'echo "resume $HEALTHSWITCH_EPOCH" >> %[2]s']}
`, sink.URL, file))
	return sc, func() string {
		b, _ := os.ReadFile(file)
		l := strings.Split(strings.TrimSpace(string(b)), "\n")
		return l[len(l)-1]
	}
}

// The pitfall of an epoch fence: the plugin's epoch starts again from 0
// when the DNS server restarts. The sidecar orders by the signed time, so
// the restarted server's first, low-epoch decision is still obeyed.
func TestIngressObeysRestartedDNSServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs coredns twice and the sidecar")
	}
	sc, last := startEpochLogSidecar(t)
	corefile := ingressCorefile(t, sc.url+"/v1/distribution")
	apiPort := freePort(t)
	first := realCoreDNSOn(t, corefile, apiPort)
	east := newPusher("east", eastKey)
	for i, healthy := range []bool{true, false, true, false} {
		if code, err := east.push(first.api, healthy); code != 204 {
			t.Fatalf("report %d: %d %v", i, code, err)
		}
		want := "resume"
		if !healthy {
			want = "stop"
		}
		testutil.WaitFor(t, 3*time.Second, fmt.Sprintf("transition %d applied", i), func() bool { return strings.HasPrefix(last(), want+" ") })
	}
	var stopEpoch uint64
	fmt.Sscanf(last(), "stop %d", &stopEpoch)
	first.cmd.Process.Kill()
	first.cmd.Wait()

	second := realCoreDNSOn(t, corefile, apiPort)
	restarted := newPusher("east", eastKey)
	restarted.Boot = "after-restart"
	if code, err := restarted.push(second.api, true); code != 204 {
		t.Fatalf("report to the restarted server: %d %v", code, err)
	}
	testutil.WaitFor(t, 3*time.Second, "the restarted server's resume applied", func() bool { return strings.HasPrefix(last(), "resume ") })
	var resumeEpoch uint64
	fmt.Sscanf(last(), "resume %d", &resumeEpoch)
	if resumeEpoch >= stopEpoch {
		t.Errorf("the restarted server's epoch %d is not below the first's %d: this test shows nothing", resumeEpoch, stopEpoch)
	}
	if st := sc.settled(t, "serving"); st.Last.Epoch != resumeEpoch {
		t.Errorf("sidecar status: %+v", st)
	}
}

// Two DNS replicas (no peers) notify the same sidecar, each with its own
// epochs: every newer decision is obeyed, whichever replica signed it, even
// when its epoch is not above the other's.
func TestIngressFollowsTheLatestReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two coredns and the sidecar")
	}
	sc, last := startEpochLogSidecar(t)
	corefile := ingressCorefile(t, sc.url+"/v1/distribution")
	a, b := realCoreDNS(t, corefile), realCoreDNS(t, corefile)
	toA, toB := newPusher("east", eastKey), newPusher("east", eastKey)
	steps := []struct {
		who     string
		api     string
		p       *pusher
		healthy bool
	}{
		{"a", a.api, toA, true}, {"b", b.api, toB, true},
		{"a", a.api, toA, false}, {"b", b.api, toB, false},
		{"a", a.api, toA, true}, {"b", b.api, toB, true},
	}
	var epochs []string
	for i, st := range steps {
		before := sc.ingress(t).Notifications["applied"]
		if code, err := st.p.push(st.api, st.healthy); code != 204 {
			t.Fatalf("step %d: report to %s: %d %v", i, st.who, code, err)
		}
		want := "resume"
		if !st.healthy {
			want = "stop"
		}
		testutil.WaitFor(t, 3*time.Second, fmt.Sprintf("step %d: %s's %s applied", i, st.who, want), func() bool {
			return sc.ingress(t).Notifications["applied"] == before+1 && strings.HasPrefix(last(), want+" ")
		})
		epochs = append(epochs, st.who+":"+last())
	}
	t.Logf("applied in order: %s", strings.Join(epochs, ", "))
	if st := sc.ingress(t); st.Notifications["stale"] != 0 || st.Notifications["replay"] != 0 || st.State != "serving" {
		t.Errorf("sidecar status: %+v", st)
	}
}
