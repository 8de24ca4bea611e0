package test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/demo"
)

// BenchmarkSidecarResources runs the built sidecar with 10 non-exec checks
// (4 http, 3 tcp, 2 dns, 1 ovs /proc read) at 100 ms and a 250 ms heartbeat
// against local servers, and reports its CPU use and resident memory over a
// 5 s window. One iteration is the whole measurement.
func BenchmarkSidecarResources(b *testing.B) {
	if testing.Short() {
		b.Skip("runs the sidecar for several seconds")
	}
	bin := buildSidecar(b)
	cfg, received := sidecarResourceConfig(b)
	for range b.N {
		cpu, rss, reports := measureSidecar(b, bin, cfg, received, time.Second, 5*time.Second)
		b.ReportMetric(cpu, "cpu-%")
		b.ReportMetric(rss, "rss-MiB")
		b.ReportMetric(reports, "reports/s")
	}
}

// buildSidecar builds the sidecar fresh, so a stale bin/ is never measured.
func buildSidecar(tb testing.TB) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "healthswitch-sidecar")
	if b, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "../cmd/healthswitch-sidecar").CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestSidecarResources keeps the figures of BenchmarkSidecarResources within
// generous bounds, so a regression (a busy loop, a leak) fails the tests.
func TestSidecarResources(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the sidecar for several seconds")
	}
	cfg, received := sidecarResourceConfig(t)
	cpu, rss, reports := measureSidecar(t, buildSidecar(t), cfg, received, time.Second, 3*time.Second)
	t.Logf("10 checks at 100 ms: cpu %.1f%% of one core, rss %.1f MiB, %.1f reports/s", cpu, rss, reports)
	if cpu > 50 || rss > 100 || reports < 3 {
		t.Errorf("cpu %.1f%% (max 50), rss %.1f MiB (max 100), %.1f reports/s (min 3: heartbeat 250ms)", cpu, rss, reports)
	}
}

// sidecarResourceConfig starts the servers the checks and pushes go to and
// writes the config; received counts the reports that arrive.
func sidecarResourceConfig(tb testing.TB) (string, *atomic.Int64) {
	tb.Helper()
	dir := tb.TempDir()
	os.WriteFile(filepath.Join(dir, "k.key"), []byte("bench-key-0123456789abcdef\n"), 0o600)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	tb.Cleanup(web.Close)
	recv, received := reportSink(tb)
	ln := serveConns(tb, "tcp", "127.0.0.1:0", func(c net.Conn) { c.Close() })
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 5 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	tb.Cleanup(func() { srv.Shutdown() })

	var c strings.Builder
	fmt.Fprintf(&c, "cluster: east\nkey_file: k.key\nreport_to: [%s]\ninterval: 100ms\nheartbeat: 250ms\nlisten: 127.0.0.1:0\nchecks:\n", recv.URL)
	for i := range 4 {
		fmt.Fprintf(&c, "  - {name: http-%d, http: {url: %s/healthz/%d, expect_body: ok}}\n", i, web.URL, i)
	}
	for i := range 3 {
		fmt.Fprintf(&c, "  - {name: tcp-%d, tcp: {address: %s}}\n", i, ln.Addr())
	}
	for i := range 2 {
		fmt.Fprintf(&c, "  - {name: dns-%d, dns: {server: '%s', name: svc%d.net, expect: [192.0.2.1]}}\n", i, pc.LocalAddr(), i)
	}
	// A stand-in ovs-vswitchd (sh named so), so the ovs check measures the
	// healthy path, as on a working node.
	sock := "unix:" + dir + "/db.sock"
	ovs := &exec.Cmd{Path: "/bin/sh", Args: []string{"ovs-vswitchd", "-c", "sleep 60; :", "x", sock}}
	if err := ovs.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ovs.Process.Kill(); ovs.Wait() })
	fmt.Fprintf(&c, "  - {name: ovs, preset: ovs, ovs: {match: '%s'}}\n", sock)
	path := filepath.Join(dir, "sidecar.yaml")
	os.WriteFile(path, []byte(c.String()), 0o600)
	return path, received
}

// measureSidecar runs bin with cfg, lets it warm up, then returns its CPU
// use (percent of one core) and resident set (MiB) over window.
func measureSidecar(tb testing.TB, bin, cfg string, received *atomic.Int64, warmup, window time.Duration) (cpuPercent, rssMiB, reportsPerSec float64) {
	tb.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-config", cfg, "-log-level", "warn")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	defer stop()
	time.Sleep(warmup) // a measurement window, not a wait for a condition
	t0, cpu0, n0 := time.Now(), cpuTime(tb, cmd.Process.Pid), received.Load()
	time.Sleep(window)
	t1, cpu1, n1 := time.Now(), cpuTime(tb, cmd.Process.Pid), received.Load()
	rss := rssKiB(tb, cmd.Process.Pid)
	stop() // stderr is the child's until it has exited
	if stderr.Len() > 0 {
		tb.Logf("sidecar log:\n%s", stderr.String())
	}
	return percentOfCore(cpu1-cpu0, t1.Sub(t0)), float64(rss) / 1024, float64(n1-n0) / t1.Sub(t0).Seconds()
}

// cpuTime is the user+system CPU pid has used (demo.CPUTime).
func cpuTime(tb testing.TB, pid int) time.Duration {
	d, err := demo.CPUTime(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// percentOfCore is CPU used over a wall-clock span, in % of one core.
func percentOfCore(cpu, wall time.Duration) float64 { return 100 * cpu.Seconds() / wall.Seconds() }

func rssKiB(tb testing.TB, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}
