package sidecar

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// TestWatchersLeakNothingAcrossReloads reloads a sidecar whose checks have
// every kind of event source (pidfd, held HTTP, TCP and unix connections,
// inotify and cgroup v1's eventfd as root, a parked PostgreSQL connection
// and its data directory's lock file where PostgreSQL is installed, and one source that falls back) 100 times,
// each time waiting until the new generation's sources are established, and
// fails if goroutines or file descriptors grow.
func TestWatchersLeakNothingAcrossReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("100 reloads")
	}
	dir := t.TempDir()
	web := newFlappy(t)
	holder := holdingTCPServer(t)
	dropper := droppingTCPServer(t)
	sock := filepath.Join(dir, "db.sock")
	serveSocket(t, sock)
	name := fmt.Sprintf("hs-%d-leak", os.Getpid())
	startDaemon(t, name, "", "unix:"+sock)
	checks := []string{
		"{name: web, http: {url: '" + web.URL + "'}}",
		"{name: port, tcp: {address: '" + holder + "'}}",
		"{name: dropper, tcp: {address: '" + dropper + "'}}",
		"{name: daemon, process: {name: " + name + "}}",
		"{name: ovs, preset: ovs, ovs: {process: " + name + ", match: '" + sock + "', socket: " + sock + "}}",
	}
	want := map[string]int{"web/held connection": 1, "port/held connection": 1, "ovs/held connection": 1, "daemon/pidfd": 1, "ovs/pidfd": 1}
	if os.Geteuid() == 0 {
		if root := v2RootOrEmpty(); root != "" {
			cg := makeCgroup(t, root, "leak")
			startIn(t, "sleep 600", cg)
			spec := "{name: pod, cgroup: {path: " + cg + "}}"
			want["pod/inotify"] = 1
			if _, err := os.Stat("/sys/fs/cgroup/memory/memory.oom_control"); err == nil {
				v1 := makeCgroup(t, "/sys/fs/cgroup/memory", "leak")
				spec = "{name: pod, cgroup: {path: " + cg + ", memory_v1: " + v1 + "}}"
				want["pod/oom eventfd"] = 1
			}
			checks = append(checks, spec)
		}
	}
	if testutil.PostgresBin() != "" {
		pg := testutil.StartPostgresServer(t, 50)
		checks = append(checks, "{name: db, postgres: {dsn: '"+pg.DSN+"', data_dir: "+pg.DataDir()+"}}")
		want["db/parked connection"] = 1
		want["db/lock file"] = 1
	}
	rc := newReceiver(t)
	cfgText := "cluster: east\nkey_file: test.key\nreport_to: [" + rc.URL + "]\ninterval: 1s\nheartbeat: 1s\nlisten: 127.0.0.1:0\nchecks:\n  - " + strings.Join(checks, "\n  - ") + "\n"
	sources := traceSources(t)
	established := func(gen int) bool {
		for what, n := range want {
			if sources(what) < gen*n {
				return false
			}
		}
		return true
	}
	s, _ := startSidecar(t, loadConfig(t, cfgText))
	testutil.WaitFor(t, 10*time.Second, "every source established", func() bool { return established(1) })
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	const reloads = 100
	for i := range reloads {
		if err := s.Reload(loadConfig(t, cfgText)); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("every source of generation %d established", i+2), func() bool { return established(i + 2) })
	}
	// Closed connections take their server-side goroutines a moment to end.
	const slack = 8
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines+slack || openFDs(t) > fds+slack {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			out, _ := exec.Command("sh", "-c", fmt.Sprintf("ss -tanpx | grep 'pid=%d,' | awk '{print $1, $2, $5, $6}' | sort | uniq -c | sort -rn | head -20", os.Getpid())).CombinedOutput()
			t.Logf("%s", out)
			t.Fatalf("after %d reloads: %d goroutines (before: %d), %d fds (before: %d): %v\n%s", reloads,
				runtime.NumGoroutine(), goroutines, openFDs(t), fds, fdKinds(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	testutil.WaitFor(t, 2*time.Second, "the dropper's source to fall back", func() bool {
		return s.current().runners[2].check.Name == "dropper" && s.Status().Checks[2].Watch == watchStateFallback
	})
	for _, c := range s.Status().Checks {
		if want := map[bool]string{true: watchStateFallback, false: watchStateEvents}[c.Name == "dropper"]; c.Watch != want {
			t.Errorf("check %s: watch %s (%s), want %s", c.Name, c.Watch, c.WatchError, want)
		}
	}
	t.Logf("after %d reloads: %d goroutines (before: %d), %d fds (before: %d)", reloads, runtime.NumGoroutine(), goroutines, openFDs(t), fds)
}

func v2RootOrEmpty() string {
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(root, "cgroup.subtree_control")); err == nil {
			return root
		}
	}
	return ""
}

func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// holdingTCPServer accepts connections and keeps them open until the peer
// closes them.
func holdingTCPServer(t testing.TB) string {
	return tcpServer(t, func(c net.Conn) { c.Read(make([]byte, 1)); c.Close() })
}

// droppingTCPServer closes every connection at once: a held connection
// cannot start against it.
func droppingTCPServer(t testing.TB) string {
	return tcpServer(t, func(c net.Conn) { c.Close() })
}

// tcpServer listens on a free loopback port until the test ends and hands
// every connection to handle, each in its own goroutine.
func tcpServer(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// fdKinds counts the open descriptors by what they are (socket, pipe,
// anon_inode:[pidfd], a file), for the failure message.
func fdKinds() map[string]int {
	m := map[string]int{}
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if i := strings.IndexByte(l, ':'); i > 0 && !strings.HasPrefix(l, "/") {
			l = l[:i]
		}
		m[l]++
	}
	return m
}

// TestNodePresetsLeakNothingAcrossReloads: the node presets that keep a
// connection between runs (nftables' and iptables' netlink socket, vm's
// libvirt connection, pods' CRI connection) beside their event sources
// (the nftables monitor, libvirt events, the CRI event stream), reloaded
// 30 times, each generation run at least once: goroutines and file
// descriptors do not grow.
func TestNodePresetsLeakNothingAcrossReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("30 reloads")
	}
	testutil.Need(t, "nft", "iptables-nft")
	ns := netns(t)
	inNS(t, ns, "nft", "add table inet hs")
	inNS(t, ns, "nft", "add chain inet hs input { type filter hook input priority 0; }")
	inNS(t, ns, "nft", "add rule inet hs input tcp dport 22 accept")
	inNS(t, ns, "iptables-nft", "-A", "INPUT", "-j", "ACCEPT")
	lv := testutil.StartLibvirtd(t)
	cri := newCRIDouble(t)
	cri.Set("c1", "web", criRunning, criStarted, 1)
	checks := []string{
		"{name: rules, preset: nftables, nftables: {netns: " + nsName(ns) + ", min_rules: 1}}",
		"{name: filter, preset: iptables, iptables: {netns: " + nsName(ns) + "}}",
		"{name: vms, preset: vm, vm: {uri: '" + lv.URI + "', domains: [test]}}",
		"{name: pods, preset: pods, pods: {socket: " + cri.Sock + "}}",
	}
	want := map[string]int{"rules/nftables monitor": 1, "filter/nftables monitor": 1, "vms/libvirt events": 1, "pods/cri events": 1}
	rc := newReceiver(t)
	cfgText := "cluster: east\nkey_file: test.key\nreport_to: [" + rc.URL + "]\ninterval: 100ms\nheartbeat: 1s\nlisten: 127.0.0.1:0\nchecks:\n  - " + strings.Join(checks, "\n  - ") + "\n"
	sources := traceSources(t)
	s, _ := startSidecar(t, loadConfig(t, cfgText))
	ranSince := func(before []uint64) bool {
		for i, c := range s.Status().Checks {
			if c.Runs <= before[i] || !c.LastOK {
				return false
			}
		}
		return true
	}
	runs := func() []uint64 {
		var n []uint64
		for _, c := range s.Status().Checks {
			n = append(n, c.Runs)
		}
		return n
	}
	generation := func(gen int) {
		t.Helper()
		before := runs()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var missing []string
			for what, n := range want {
				if sources(what) < gen*n {
					missing = append(missing, what)
				}
			}
			if len(missing) == 0 && ranSince(before) {
				return
			}
			if time.Now().After(deadline) {
				var checks []string
				for _, c := range s.Status().Checks {
					checks = append(checks, fmt.Sprintf("%s: %d runs, ok %v, watch %s %s (%s)", c.Name, c.Runs, c.LastOK, c.Watch, c.WatchError, c.Detail))
				}
				t.Fatalf("generation %d: after 10 s, sources not established: %v; checks (runs before: %v): %s", gen, missing, before, strings.Join(checks, "; "))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	generation(1)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	const reloads = 30
	for i := range reloads {
		if err := s.Reload(loadConfig(t, cfgText)); err != nil {
			t.Fatal(err)
		}
		generation(i + 2)
	}
	const slack = 8
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines+slack || openFDs(t) > fds+slack {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after %d reloads: %d goroutines (before: %d), %d fds (before: %d): %v\n%s", reloads,
				runtime.NumGoroutine(), goroutines, openFDs(t), fds, fdKinds(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("after %d reloads: %d goroutines (before: %d), %d fds (before: %d)", reloads, runtime.NumGoroutine(), goroutines, openFDs(t), fds)
}
