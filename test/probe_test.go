package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

// ingress is a real HTTP server standing in for a cluster's ingress; it can
// be made to fail.
type ingress struct {
	srv     *httptest.Server
	failing atomic.Bool
}

func newIngress(t *testing.T) *ingress {
	in := &ingress{}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if in.failing.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(in.srv.Close)
	return in
}

func probeCorefile(t *testing.T, eastProbe, westProbe, extra string) string {
	east, west := keyFiles(t)
	return `svc1.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            probe ` + eastProbe + `
            key_file ` + east + `
            priority 1
        }
        cluster west 127.0.0.12 {
            probe ` + westProbe + `
            key_file ` + west + `
            priority 2
        }
        listen 127.0.0.1:APIPORT
        interval 20ms
        timeout 15ms
        fall 2
        rise 2
        stale 1h
` + extra + `
    }
}
`
}

// waitProbes waits until every cluster's probe has decided.
func waitProbes(t *testing.T, s *realServer) {
	t.Helper()
	waitFor(t, 5*time.Second, "probes to decide", func() bool {
		var st struct {
			Clusters []struct{ Probe struct{ Signal string } }
		}
		getJSON(t, s.api+"/v1/status", &st)
		for _, c := range st.Clusters {
			if c.Probe.Signal == "unknown" {
				return false
			}
		}
		return true
	})
}

func waitAnswer(t *testing.T, s *realServer, want string) {
	t.Helper()
	waitFor(t, 5*time.Second, "svc1.net to answer "+want, func() bool { return answerSet(s.dns, "svc1.net.") == want })
}

func TestProbeTakesClusterOutThoughSidecarHealthy(t *testing.T) {
	east, west := newIngress(t), newIngress(t)
	s := realCoreDNS(t, probeCorefile(t, east.srv.URL+"/healthz", "tcp://"+west.srv.Listener.Addr().String(), ""))
	eastP := newPusher("east", eastKey)
	eastP.push(s.api, true)
	waitProbes(t, s)
	waitAnswer(t, s, "127.0.0.11 127.0.0.12")

	east.failing.Store(true) // ingress answers 500; the sidecar still says healthy
	eastP.push(s.api, true)
	waitAnswer(t, s, "127.0.0.12")
	east.failing.Store(false)
	waitAnswer(t, s, "127.0.0.11 127.0.0.12")

	// A tcp probe: the listener goes away.
	west.srv.Close()
	waitAnswer(t, s, "127.0.0.11")
}

func TestSidecarTakesClusterOutThoughProbePasses(t *testing.T) {
	east, west := newIngress(t), newIngress(t)
	s := realCoreDNS(t, probeCorefile(t, east.srv.URL, west.srv.URL, ""))
	waitProbes(t, s)
	waitAnswer(t, s, "127.0.0.11 127.0.0.12")
	eastP := newPusher("east", eastKey)
	if code, _ := eastP.push(s.api, false); code != 204 {
		t.Fatal(code)
	}
	if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.12" {
		t.Errorf("sidecar unhealthy, probe passing: %q", got)
	}
	var st struct {
		Clusters []struct {
			Name  string
			State string
			Probe struct{ Signal string }
		}
	}
	getJSON(t, s.api+"/v1/status", &st)
	if st.Clusters[0].State != "down" || st.Clusters[0].Probe.Signal != "up" {
		t.Errorf("status: %+v", st.Clusters[0])
	}
	if !strings.Contains(metrics(t, s), `coredns_healthswitch_signal_disagreements_total{cluster="east"} 1`) {
		t.Error("disagreement not counted")
	}
}

func TestFailoverTierSwitchByProbe(t *testing.T) {
	east, west := newIngress(t), newIngress(t)
	s := realCoreDNS(t, probeCorefile(t, east.srv.URL, west.srv.URL, "policy failover"))
	waitProbes(t, s)
	waitAnswer(t, s, "127.0.0.11")
	east.failing.Store(true)
	waitAnswer(t, s, "127.0.0.12")
	east.failing.Store(false)
	waitAnswer(t, s, "127.0.0.11")
}

// Holddown keeps a recovered cluster out; slow start then ramps its share.
func TestHolddownAndSlowStartDistribution(t *testing.T) {
	east, west := newIngress(t), newIngress(t)
	// Probes with room to spare on a loaded machine: west must stay whole for
	// east's share to be measured (were both to ramp, the one back first is
	// answered whole).
	s := realCoreDNS(t, probeCorefile(t, east.srv.URL, west.srv.URL, "holddown 600ms\nslow_start 2s\ninterval 50ms\ntimeout 45ms"))
	waitProbes(t, s)
	waitAnswer(t, s, "127.0.0.11 127.0.0.12")
	east.failing.Store(true)
	waitAnswer(t, s, "127.0.0.12")
	failedAt := time.Now()
	east.failing.Store(false)
	// Held down: east stays out for the holddown although its probe passes.
	for time.Since(failedAt) < 450*time.Millisecond {
		if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.12" {
			t.Fatalf("%s after failing: %q during holddown", time.Since(failedAt), got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitFor(t, 3*time.Second, "east back in some answers", func() bool { return strings.Contains(answerSet(s.dns, "svc1.net."), "127.0.0.11") })
	// Early in the ramp east is in a minority of answers; after it, in all.
	share := func(n int) float64 {
		in := 0
		for range n {
			if strings.Contains(answerSet(s.dns, "svc1.net."), "127.0.0.11") {
				in++
			}
		}
		return float64(in) / float64(n)
	}
	early := share(200)
	// The ramp is over when /v1/status shows east answered without weights.
	waitFor(t, 5*time.Second, "the slow start to end", func() bool {
		resp, err := http.Get(s.api + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var doc struct {
			Names []struct {
				A       []string           `json:"a"`
				Weights map[string]float64 `json:"weights"`
			} `json:"names"`
		}
		return json.NewDecoder(resp.Body).Decode(&doc) == nil && len(doc.Names) == 1 &&
			doc.Names[0].Weights == nil && slices.Contains(doc.Names[0].A, "127.0.0.11")
	})
	late := share(200)
	t.Logf("east in %.0f%% of answers early in slow start, %.0f%% after", early*100, late*100)
	if early > 0.6 || late != 1 {
		t.Errorf("slow start: early share %.2f (want well below 1), late %.2f (want 1)", early, late)
	}
}

func TestNotifyWebhookSigned(t *testing.T) {
	var mu sync.Mutex
	var got []report.Notification
	var bad []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := report.Verify([]byte(eastKey), r.Header.Get(report.HeaderTimestamp), r.Header.Get(report.HeaderSignature), body, time.Now(), time.Minute)
		var n report.Notification
		json.Unmarshal(body, &n)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bad = append(bad, err.Error())
		}
		got = append(got, n)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	eastKeyFile, westKeyFile := keyFiles(t)
	s := realCoreDNS(t, fmt.Sprintf(`svc1.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file %s
            notify %s/v1/distribution
        }
        cluster west 127.0.0.12 {
            key_file %s
        }
        listen 127.0.0.1:APIPORT
        stale 1h
    }
}
`, eastKeyFile, hook.URL, westKeyFile))
	p := newPusher("east", eastKey)
	p.push(s.api, false)
	p.push(s.api, true)
	waitFor(t, 5*time.Second, "two notifications", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("bad signatures: %v", bad)
	}
	if got[0].Action != "stop" || got[1].Action != "resume" || got[0].Cluster != "east" || got[1].Epoch <= got[0].Epoch {
		t.Errorf("notifications: %+v", got)
	}
}

// A report, or a drain, reaching one of three peered DNS servers reaches all
// of them.
func TestPeersConverge(t *testing.T) {
	admin := filepath.Join(t.TempDir(), "admin.key")
	os.WriteFile(admin, []byte("admin-key-0123456789"), 0o600)
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var servers []*realServer
	for i := range ports {
		var peers []string
		for j, p := range ports {
			if j != i {
				peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", p))
			}
		}
		servers = append(servers, realCoreDNSOn(t, pushCorefile(t, "peers "+strings.Join(peers, " ")+"\nadmin_key_file "+admin), ports[i]))
	}
	p := newPusher("east", eastKey)
	if code, _ := p.push(servers[0].api, false); code != 204 {
		t.Fatal(code)
	}
	for i, s := range servers {
		waitFor(t, 3*time.Second, fmt.Sprintf("server %d to drop east", i), func() bool { return answerSet(s.dns, "svc1.net.") == "127.0.0.12" })
	}
	// Nothing loops: each peer accepted the report once, forwarded.
	for i, s := range servers[1:] {
		if m := metrics(t, s); !strings.Contains(m, `coredns_healthswitch_reports_accepted_total{cluster="east",forwarded="true"} 1`) {
			t.Errorf("peer %d: forwarded reports: %s", i+1, grepLines(m, "reports_accepted"))
		}
	}
	// An operator drain on the last server reaches the other two.
	if code, err := postSigned(servers[2].api+"/v1/clusters/west/drain", []byte(`{"action":"drain","cluster":"west"}`), []byte("admin-key-0123456789"), time.Now()); code != 200 {
		t.Fatalf("drain: %d %v", code, err)
	}
	for i, s := range servers {
		waitFor(t, 3*time.Second, fmt.Sprintf("server %d to show west drained", i), func() bool {
			var st struct {
				Clusters []struct{ Name, State string }
			}
			getJSON(t, s.api+"/v1/status", &st)
			return st.Clusters[1].State == "drained"
		})
	}
}

// The ingress sits in its own network namespace behind a veth; the link goes
// down and the probe path notices.
func TestProbeDetectsLinkDownInNamespace(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.Need(t, "ip")
	ns := fmt.Sprintf("hs-probe-%d", time.Now().UnixNano()%100000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	host, peer := "hsv"+ns[9:], "hsp"+ns[9:]
	run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run("ip", "link", "set", peer, "netns", ns)
	run("ip", "addr", "add", "10.213.0.1/30", "dev", host)
	run("ip", "link", "set", host, "up")
	run("ip", "netns", "exec", ns, "ip", "addr", "add", "10.213.0.2/30", "dev", peer)
	run("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
	run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	// The ingress: a TCP listener inside the namespace.
	srv := exec.Command("ip", "netns", "exec", ns, "python3", "-c",
		"import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('10.213.0.2',8080));s.listen(64)\nwhile True:\n c,_=s.accept();c.close()")
	testutil.Need(t, "python3")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitFor(t, 5*time.Second, "the namespaced ingress to listen", func() bool {
		c, err := net.DialTimeout("tcp", "10.213.0.2:8080", 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	west := newIngress(t)
	s := realCoreDNS(t, probeCorefile(t, "tcp://10.213.0.2:8080", west.srv.URL, ""))
	waitProbes(t, s)
	waitAnswer(t, s, "127.0.0.11 127.0.0.12")
	// The far end goes down: the host side keeps its route (no carrier), so
	// probes die on the veth instead of following a default route out.
	run("ip", "netns", "exec", ns, "ip", "link", "set", peer, "down")
	waitAnswer(t, s, "127.0.0.12")
	run("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
	waitAnswer(t, s, "127.0.0.11 127.0.0.12")
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
