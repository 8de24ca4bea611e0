package test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/demo"
	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// realBinary returns bin/NAME, building it into a temp dir when the
// checkout has not been built.
func realBinary(t testing.TB, name string) string {
	t.Helper()
	if p, err := filepath.Abs("../bin/" + name); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "healthswitch-bin")
		if buildErr == nil {
			out, err := exec.Command("go", "build", "-o", buildDir+"/", "../cmd/...").CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, name)
}

func freePort(t testing.TB) int { return testutil.FreePort(t) }

// realServer is bin/coredns started from a Corefile.
type realServer struct {
	dns, api string
	metrics  string // URL of /metrics
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

// realCoreDNS starts bin/coredns with corefile, whose DNS port is written
// DNSPORT and push API port APIPORT, and waits until both answer.
func realCoreDNS(t testing.TB, corefile string) *realServer {
	t.Helper()
	return realCoreDNSOn(t, corefile, freePort(t))
}

// realCoreDNSOn is realCoreDNS with a push API port chosen by the caller.
func realCoreDNSOn(t testing.TB, corefile string, apiPort int) *realServer {
	t.Helper()
	return startCoreDNS(t, realBinary(t, "coredns"), corefile, apiPort)
}

// writeCorefile writes corefile with DNSPORT and APIPORT replaced (the DNS
// port a free one) and a prometheus listener on a free port added before
// healthswitch, and returns its path, the DNS address and the metrics URL.
func writeCorefile(t testing.TB, corefile string, apiPort int) (path, dns, metrics string) {
	t.Helper()
	dnsPort, metricsPort := freePort(t), freePort(t)
	corefile = strings.Replace(corefile, "    healthswitch {", fmt.Sprintf("    prometheus 127.0.0.1:%d\n    healthswitch {", metricsPort), 1)
	corefile = strings.ReplaceAll(corefile, "DNSPORT", fmt.Sprint(dnsPort))
	corefile = strings.ReplaceAll(corefile, "APIPORT", fmt.Sprint(apiPort))
	path = filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, fmt.Sprintf("127.0.0.1:%d", dnsPort), fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
}

// startCoreDNS is realCoreDNSOn with the CoreDNS binary chosen by the caller.
func startCoreDNS(t testing.TB, bin, corefile string, apiPort int) *realServer {
	t.Helper()
	path, dns, metrics := writeCorefile(t, corefile, apiPort)
	s := &realServer{dns: dns, api: fmt.Sprintf("http://127.0.0.1:%d", apiPort), metrics: metrics, log: &bytes.Buffer{}}
	s.cmd = exec.Command(bin, "-conf", path)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		if t.Failed() {
			t.Logf("coredns output:\n%s", s.log)
		}
	})
	waitFor(t, 10*time.Second, "coredns to answer", answering(s.api, s.dns))
	return s
}

// answering is the condition "the push API and the DNS port both answer".
func answering(api, dnsAddr string) func() bool {
	return func() bool {
		resp, err := http.Get(api + "/v1/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		_, err = realQuery(dnsAddr, "udp", "svc1.net.", dns.TypeSOA)
		return err == nil
	}
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, d, what, cond)
}

func realQuery(addr, network, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: network, Timeout: time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// answerSet is the sorted addresses of an answer, "" on error.
func answerSet(addr, name string) string {
	r, err := realQuery(addr, "udp", name, dns.TypeA)
	if err != nil {
		return "error: " + err.Error()
	}
	var ips []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return strings.Join(ips, " ")
}

// pusher is the demo's report sender, pointed at a push API per call.
type pusher struct{ demo.Pusher }

func newPusher(cluster, key string) *pusher {
	return &pusher{demo.Pusher{Cluster: cluster, Boot: "b", Key: []byte(key)}}
}

func (p *pusher) push(api string, healthy bool) (int, error) {
	p.API = api
	return p.Push(healthy)
}

func postSigned(url string, body, key []byte, ts time.Time) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if key != nil {
		report.SignRequest(req, key, ts, body)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

const eastKey, westKey = "east-key-0123456789abcdef", "west-key-0123456789abcdef"

func keyFiles(t testing.TB) (east, west string) {
	dir := t.TempDir()
	east, west = filepath.Join(dir, "east.key"), filepath.Join(dir, "west.key")
	os.WriteFile(east, []byte(eastKey+"\n"), 0o600)
	os.WriteFile(west, []byte(westKey+"\n"), 0o600)
	return east, west
}

func pushCorefile(t testing.TB, extra string) string {
	east, west := keyFiles(t)
	return `svc1.net:DNSPORT svc2.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file ` + east + `
        }
        cluster west 127.0.0.12 {
            key_file ` + west + `
        }
        listen 127.0.0.1:APIPORT
        stale 2s
` + extra + `
    }
}
`
}

// The patent's path end to end: the sidecar reports a fault, the DNS server
// stops answering with that cluster for every name, and takes it back.
func TestRealBinaryPushedReportsSwitchAnswers(t *testing.T) {
	s := realCoreDNS(t, pushCorefile(t, ""))
	east := newPusher("east", eastKey)
	west := newPusher("west", westKey)
	for _, p := range []*pusher{east, west} {
		if code, err := p.push(s.api, true); err != nil || code != 204 {
			t.Fatalf("healthy report: %d %v", code, err)
		}
	}
	for _, name := range []string{"svc1.net.", "svc2.net."} {
		if got := answerSet(s.dns, name); got != "127.0.0.11 127.0.0.12" {
			t.Fatalf("%s both up: %q", name, got)
		}
	}
	if code, _ := east.push(s.api, false); code != 204 {
		t.Fatalf("unhealthy report: %d", code)
	}
	// Applied before the 204 was written: no waiting needed.
	for _, name := range []string{"svc1.net.", "svc2.net."} {
		if got := answerSet(s.dns, name); got != "127.0.0.12" {
			t.Errorf("%s after east failed: %q", name, got)
		}
	}
	if code, _ := east.push(s.api, true); code != 204 {
		t.Fatalf("healthy report: %d", code)
	}
	if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.11 127.0.0.12" {
		t.Errorf("after east recovered: %q", got)
	}
}

func TestRealBinaryRejectsBadReports(t *testing.T) {
	s := realCoreDNS(t, pushCorefile(t, ""))
	east := newPusher("east", eastKey)
	if code, _ := east.push(s.api, false); code != 204 {
		t.Fatal(code)
	}
	good := []byte(`{"version":1,"cluster":"east","boot_id":"b","sequence":9,"sent_at":"2026-11-22T10:00:00Z","healthy":true}`)
	tests := []struct {
		name   string
		body   []byte
		key    []byte
		ts     time.Time
		status int
	}{
		{"forged", good, []byte("not-the-east-key-at-all"), time.Now(), 401},
		{"unsigned", good, nil, time.Now(), 401},
		{"replayed sequence", bytes.Replace(good, []byte(`"sequence":9`), []byte(`"sequence":1`), 1), []byte(eastKey), time.Now(), 409},
		{"stale timestamp", good, []byte(eastKey), time.Now().Add(-time.Hour), 409},
		{"oversized", append(good, bytes.Repeat([]byte(" "), report.MaxBodySize)...), []byte(eastKey), time.Now(), 413},
		{"malformed", []byte(`{"version":`), []byte(eastKey), time.Now(), 400},
		{"unknown cluster", bytes.Replace(good, []byte(`"east"`), []byte(`"north"`), 1), []byte(eastKey), time.Now(), 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, err := postSigned(s.api+"/v1/report", tc.body, tc.key, tc.ts)
			if err != nil || code != tc.status {
				t.Errorf("status %d (%v), want %d", code, err, tc.status)
			}
			if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.12" {
				t.Errorf("answer changed to %q", got)
			}
		})
	}
	m := metrics(t, s)
	for _, want := range []string{
		`coredns_healthswitch_reports_rejected_total{reason="signature"} 2`,
		`coredns_healthswitch_reports_rejected_total{reason="replay"} 1`,
		`coredns_healthswitch_reports_rejected_total{reason="skew"} 1`,
		`coredns_healthswitch_reports_rejected_total{reason="too_large"} 1`,
		`coredns_healthswitch_reports_rejected_total{reason="malformed"} 1`,
		`coredns_healthswitch_reports_rejected_total{reason="unknown_cluster"} 1`,
		`coredns_healthswitch_reports_accepted_total{cluster="east",forwarded="false"} 1`,
		`coredns_healthswitch_cluster_state{cluster="east",state="down"} 1`,
		`coredns_healthswitch_detection_to_switch_seconds_count{cluster="east"} 1`,
		`coredns_healthswitch_receive_to_applied_seconds_count{cluster="east"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s; have:\n%s", want, grepLines(m, "healthswitch"))
		}
	}
}

func TestRealBinaryTruncatesLargeUDPAnswers(t *testing.T) {
	var ips []string
	for i := 1; i <= 80; i++ {
		ips = append(ips, fmt.Sprintf("127.0.1.%d", i))
	}
	s := realCoreDNS(t, "svc1.net:DNSPORT {\n healthswitch {\n  cluster big "+strings.Join(ips, " ")+"\n  listen 127.0.0.1:APIPORT\n }\n}\n")
	udp, err := realQuery(s.dns, "udp", "svc1.net.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if !udp.Truncated || len(udp.Answer) >= 80 {
		t.Errorf("UDP: truncated=%v with %d answers, want TC and fewer than 80", udp.Truncated, len(udp.Answer))
	}
	tcp, err := realQuery(s.dns, "tcp", "svc1.net.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if tcp.Truncated || len(tcp.Answer) != 80 || !tcp.Authoritative {
		t.Errorf("TCP: truncated=%v aa=%v with %d answers, want all 80", tcp.Truncated, tcp.Authoritative, len(tcp.Answer))
	}
}

func metrics(t *testing.T, s *realServer) string {
	t.Helper()
	resp, err := http.Get(s.metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
