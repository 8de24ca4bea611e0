package test

import (
	"fmt"
	"io"
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

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/healthswitch/healthswitch/internal/cridouble"
	"github.com/healthswitch/healthswitch/internal/demo"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// BenchmarkSidecarWatchedIdle runs two built sidecars side by side over the
// same window, against the same healthy targets: one with 10 watched checks
// (event sources on) and a 1 s safety poll, one with the same 10 checks
// polled every 100 ms (watch: off). It reports each one's CPU use (percent
// of one core, from /proc/PID/task/*/schedstat: nanoseconds on a CPU) and
// their ratio, with the default 250 ms heartbeat (pushes cost the same in
// both) and with a 1 s one. One iteration is the whole measurement.
func BenchmarkSidecarWatchedIdle(b *testing.B) {
	if testing.Short() {
		b.Skip("runs two sidecars for several seconds")
	}
	bin := buildSidecar(b)
	for _, hb := range []time.Duration{250 * time.Millisecond, time.Second} {
		b.Run("heartbeat="+hb.String(), func(b *testing.B) {
			for range b.N {
				watched, polled := measureWatchedIdle(b, bin, 10*time.Second, hb)
				b.ReportMetric(watched, "watched-cpu-%")
				b.ReportMetric(polled, "polled-cpu-%")
				b.ReportMetric(polled/watched, "polled/watched")
			}
		})
	}
}

// TestSidecarWatchedIdleCost guards the idle cost of watched checks: 10
// watched checks with a 1 s safety poll (and a 1 s heartbeat: at the
// default 250 ms, pushes cost the same in both) use less than the same 10
// polled at 100 ms, and at most 0.5 % of a core, the goal
// (BenchmarkSidecarWatchedIdle measures it; about 0.2 % here, also under
// load), and a watcher that spins would cost far more.
func TestSidecarWatchedIdleCost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two sidecars for several seconds")
	}
	watched, polled := measureWatchedIdle(t, buildSidecar(t), 5*time.Second, time.Second)
	t.Logf("10 watched checks, 1 s safety poll: %.2f%% of a core (goal 0.5%%); the same 10 polled at 100 ms: %.2f%%", watched, polled)
	if watched > 0.5 || watched >= polled {
		t.Errorf("10 watched checks use %.2f%% of a core (goal 0.5%%), the same polled %.2f%%", watched, polled)
	}
}

func measureWatchedIdle(tb testing.TB, bin string, window, heartbeat time.Duration) (watched, polled float64) {
	tb.Helper()
	checks, received := watchedTargets(tb)
	return measureIdle(tb, bin, checks, received, window, heartbeat)
}

// measureIdle runs the checks in two sidecars side by side, watched with a
// 1 s safety poll and polled every 100 ms, and returns each one's CPU use
// over window, in percent of one core.
func measureIdle(tb testing.TB, bin string, checks []string, received string, window, heartbeat time.Duration) (watched, polled float64) {
	tb.Helper()
	dir := tb.TempDir()
	os.WriteFile(filepath.Join(dir, "k.key"), []byte("bench-key-0123456789abcdef\n"), 0o600)
	start := func(name, timing string) *exec.Cmd {
		var c strings.Builder
		fmt.Fprintf(&c, "cluster: east\nkey_file: k.key\nreport_to: [%s]\nlisten: 127.0.0.1:0\nheartbeat: %s\nchecks:\n", received, heartbeat)
		for _, chk := range checks {
			fmt.Fprintf(&c, "  - {%s, %s}\n", chk, timing)
		}
		path := filepath.Join(dir, name+".yaml")
		os.WriteFile(path, []byte(c.String()), 0o600)
		cmd := exec.Command(bin, "-config", path, "-log-level", "warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	w := start("watched", "interval: 1s, timeout: 500ms, watch: on")
	p := start("polled", "interval: 100ms, timeout: 80ms, watch: off")
	time.Sleep(2 * time.Second) // warm-up: a measurement window, not a wait for a condition
	t0, w0, p0 := time.Now(), cpuNanos(tb, w.Process.Pid), cpuNanos(tb, p.Process.Pid)
	time.Sleep(window)
	el, w1, p1 := time.Since(t0), cpuNanos(tb, w.Process.Pid), cpuNanos(tb, p.Process.Pid)
	pct := func(d int64) float64 { return float64(d) / float64(el.Nanoseconds()) * 100 }
	return pct(w1 - w0), pct(p1 - p0)
}

// watchedTargets starts healthy targets for 10 checks that all have an
// event source (3 http, 3 tcp, 2 process, 1 ovs with its socket, 1 more
// http) and the report receiver; it returns the checks' YAML (without
// timing) and the receiver's URL.
func watchedTargets(tb testing.TB) ([]string, string) {
	tb.Helper()
	recv, _ := reportSink(tb)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	tb.Cleanup(web.Close)
	ln := serveSink(tb, "tcp", "127.0.0.1:0")
	dir := tb.TempDir()
	sock := filepath.Join(dir, "db.sock")
	serveSink(tb, "unix", sock)
	name := fmt.Sprintf("hs-%d-idle", os.Getpid())
	for _, args := range [][]string{{name, "3600"}, {"/bin/sh", "-c", "sleep 3600; :", "x", "unix:" + sock}} {
		cmd := &exec.Cmd{Path: "/bin/sleep", Args: args}
		if args[0] == "/bin/sh" {
			cmd = &exec.Cmd{Path: "/bin/sh", Args: append([]string{name + "-ovs"}, args[1:]...)}
		}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	var checks []string
	for i := range 4 {
		checks = append(checks, fmt.Sprintf("name: http-%d, http: {url: '%s/healthz/%d'}", i, web.URL, i))
	}
	for i := range 3 {
		checks = append(checks, fmt.Sprintf("name: tcp-%d, tcp: {address: '%s'}", i, ln.Addr()))
	}
	checks = append(checks,
		"name: daemon, process: {name: "+name+"}",
		"name: daemon-by-arg, process: {name: "+name+"-ovs, match: 'unix:"+sock+"'}",
		"name: ovs, preset: ovs, ovs: {process: "+name+"-ovs, match: 'unix:"+sock+"', socket: "+sock+"}")
	return checks, recv.URL
}

// cpuNanos is the time pid's threads have spent on a CPU, the sum of
// /proc/PID/task/*/schedstat (nanoseconds; Go keeps its threads, so none
// that ran is missing), plus that of the children it has waited for
// (cutime and cstime of /proc/PID/stat, in 10 ms clock ticks): a command a
// check forks is the sidecar's cost too.
func cpuNanos(tb testing.TB, pid int) int64 {
	return threadNanos(tb, pid) + childNanos(tb, pid)
}

func childNanos(tb testing.TB, pid int) int64 {
	d, err := demo.ChildCPUTime(pid)
	if err != nil {
		tb.Fatal(err)
	}
	return d.Nanoseconds()
}

func threadNanos(tb testing.TB, pid int) int64 {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("no tasks of pid %d: %v", pid, err)
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that just exited
		}
		first, _, _ := strings.Cut(string(b), " ")
		n, err := strconv.ParseInt(first, 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		sum += n
	}
	return sum
}

// BenchmarkSidecarPresetsIdle: the node presets pods, nftables, iptables,
// ovs, crio and vm, all watched with a 1 s safety poll, beside the same
// presets polled at 100 ms, with a 1 s heartbeat. The CPU of the commands
// a sidecar forks counts as its own (none fork with these settings: crio
// reads a real systemd's unit state over its private socket). Their targets are real where they can be
// (rules in a network namespace, a libvirtd with its test driver, a systemd
// user instance, daemon processes and sockets) and the CRI test double for
// pods.
func BenchmarkSidecarPresetsIdle(b *testing.B) {
	if testing.Short() {
		b.Skip("runs two sidecars for several seconds")
	}
	testutil.NeedRoot(b)
	testutil.Need(b, "nft", "iptables-nft", "virsh", "ip")
	bin := buildSidecar(b)
	checks, received := presetTargets(b)
	for range b.N {
		watched, polled := measureIdle(b, bin, checks, received, 20*time.Second, time.Second) // 20 s: forked commands count in 10 ms ticks
		b.ReportMetric(watched, "watched-cpu-%")
		b.ReportMetric(polled, "polled-cpu-%")
		b.ReportMetric(polled/watched, "polled/watched")
	}
}

// TestSidecarPresetsIdleCost guards BenchmarkSidecarPresetsIdle's goal:
// the node presets watched with a 1 s safety poll use at most 0.5 % of a
// core, forked commands included, and less than the same polled at 100 ms.
func TestSidecarPresetsIdleCost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two sidecars for several seconds")
	}
	testutil.NeedRoot(t)
	testutil.Need(t, "nft", "iptables-nft", "virsh", "ip")
	checks, received := presetTargets(t)
	watched, polled := measureIdle(t, buildSidecar(t), checks, received, 10*time.Second, time.Second)
	t.Logf("node presets watched, 1 s safety poll: %.2f%% of a core (goal 0.5%%); polled at 100 ms: %.2f%%", watched, polled)
	if watched > 0.5 || watched >= polled {
		t.Errorf("node presets watched use %.2f%% of a core (goal 0.5%%), polled %.2f%%", watched, polled)
	}
}

func presetTargets(tb testing.TB) ([]string, string) {
	tb.Helper()
	_, received := watchedTargets(tb) // the report receiver (and targets not used here)
	dir := tb.TempDir()
	ns := fmt.Sprintf("hs-%d-idle", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add: %v %s", err, out)
	}
	tb.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	for _, argv := range [][]string{
		{"nft", "add table inet hs"}, {"nft", "add chain inet hs input { type filter hook input priority 0; }"},
		{"nft", "add rule inet hs input tcp dport 22 accept"},
		{"iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"},
	} {
		args := append([]string{"netns", "exec", ns}, argv[0])
		if argv[0] == "nft" {
			args = append(args, strings.Fields(argv[1])...)
		} else {
			args = append(args, argv[1:]...)
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			tb.Fatalf("%v: %v %s", argv, err, out)
		}
	}
	lv := testutil.StartLibvirtd(tb)
	cri, err := cridouble.Start(filepath.Join(dir, "cri.sock"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cri.Close)
	cri.Set("c1", "web", runtimeapi.ContainerState_CONTAINER_RUNNING, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, time.Now().UnixNano())
	socks := map[string]string{}
	for _, d := range []string{"ovs", "crio"} {
		sock := filepath.Join(dir, d+".sock")
		serveSink(tb, "unix", sock)
		socks[d] = sock
		cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{fmt.Sprintf("hs-%d-%s", os.Getpid(), d), "-c", "sleep 3600; :", "x", "unix:" + sock}}
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	sd := testutil.StartSystemdUser(tb) // crio's unit, read over systemd's private socket
	sd.Run("hs-crio", "sleep", "3600")
	return []string{
		"name: pods, preset: pods, pods: {socket: " + filepath.Join(dir, "cri.sock") + "}",
		"name: nftables, preset: nftables, nftables: {netns: " + ns + ", min_rules: 1}",
		"name: iptables, preset: iptables, iptables: {netns: " + ns + "}",
		fmt.Sprintf("name: ovs, preset: ovs, ovs: {process: hs-%d-ovs, match: 'unix:%s', socket: %s}", os.Getpid(), socks["ovs"], socks["ovs"]),
		fmt.Sprintf("name: crio, preset: crio, crio: {unit: hs-crio, systemd_socket: %s, process: hs-%d-crio, socket: %s}", sd.Socket, os.Getpid(), socks["crio"]),
		"name: vm, preset: vm, vm: {uri: '" + lv.URI + "', domains: [test]}",
	}, received
}

// serveSink listens on addr and keeps every connection open, reading and
// dropping what it sends, until the test ends: a daemon's socket.
func serveSink(tb testing.TB, network, addr string) net.Listener {
	tb.Helper()
	return serveConns(tb, network, addr, func(c net.Conn) { io.Copy(io.Discard, c); c.Close() })
}

// serveConns listens on addr until the test ends and hands every connection
// to handle, each in its own goroutine.
func serveConns(tb testing.TB, network, addr string, handle func(net.Conn)) net.Listener {
	tb.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln
}

// reportSink is a DNS server's push API stand-in for sidecar benchmarks:
// it takes every report with 204 and counts them.
func reportSink(tb testing.TB) (*httptest.Server, *atomic.Int64) {
	received := new(atomic.Int64)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		received.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	tb.Cleanup(recv.Close)
	return recv, received
}
