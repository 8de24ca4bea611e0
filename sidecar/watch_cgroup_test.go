package sidecar

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// The cgroup tests create cgroups under the machine's own hierarchies (as
// root, names unique per test run): cgroup v2 where it is mounted, and the
// cgroup v1 memory controller for OOM kills on hosts (like the development
// machine) where only v1 has it.

func cgroupV2Root(t testing.TB) string {
	t.Helper()
	testutil.NeedRoot(t)
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "cgroup.subtree_control")); err == nil {
			return root
		}
	}
	testutil.Missing(t, "needs a cgroup v2 hierarchy")
	return ""
}

// makeCgroup creates a cgroup under root, removed at cleanup once its
// processes are gone.
func makeCgroup(t testing.TB, root, what string) string {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprintf("hs-%d-%s", os.Getpid(), what))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.kill")); err == nil || len(b) > 0 {
			os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
		}
		if err := testutil.RemoveCgroup(dir, 2*time.Second); err != nil {
			t.Errorf("cgroup %s not removed: %v", dir, err)
		}
	})
	return dir
}

// startIn starts argv inside every cgroup of dirs: a shell moves itself in
// before it execs argv, so nothing runs outside. The channel closes when
// the process has exited.
func startIn(t testing.TB, argv string, dirs ...string) <-chan struct{} {
	t.Helper()
	script := ""
	for _, d := range dirs {
		script += "echo $$ > " + filepath.Join(d, "cgroup.procs") + " && "
	}
	cmd := exec.Command("/bin/sh", "-c", script+"exec "+argv)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return done
}

func waitPopulated(t testing.TB, dir string, want string) {
	t.Helper()
	testutil.WaitFor(t, 2*time.Second, dir+" populated "+want, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		return strings.Contains(string(b), "populated "+want)
	})
}

// TestCgroupWatchEmptied: every process of the cgroup gone is down within
// milliseconds under a 10 s poll; a process back in it is up again.
func TestCgroupWatchEmptied(t *testing.T) {
	dir := makeCgroup(t, cgroupV2Root(t), "emptied")
	startIn(t, "sleep 600", dir)
	startIn(t, "sleep 600", dir)
	waitPopulated(t, dir, "1")
	sources := traceSources(t)
	w := startWatched(t, newCheck(t, "cgroup: {path: "+dir+"}\ninterval: 10s\ntimeout: 1s\nrise: 1"))
	if w.state() != hysteresis.Up {
		t.Fatalf("state %s before the fault: %s", w.state(), w.why())
	}
	testutil.WaitFor(t, 2*time.Second, "the inotify watch", func() bool { return sources("inotify") > 0 })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("every process killed: down after %s (%s)", w.waitState(t, time.Second, hysteresis.Down), w.why())
	startIn(t, "sleep 600", dir)
	t.Logf("a process back: up after %s (%s)", w.waitState(t, time.Second, hysteresis.Up), w.why())
	if st, why := w.r.watchStatus(); st != watchStateEvents {
		t.Errorf("watch %s (%s), want events", st, why)
	}
}

// TestCgroupWatchOOM: a process of a memory-limited cgroup killed by the
// OOM killer is down within milliseconds under a 10 s poll, though another
// process keeps the cgroup populated. The limit is set where the memory
// controller is: cgroup v2's memory.max, else cgroup v1's memory cgroup.
func TestCgroupWatchOOM(t *testing.T) {
	root := cgroupV2Root(t)
	dir := makeCgroup(t, root, "oom")
	dirs := []string{dir}
	spec := "cgroup: {path: " + dir + "}"
	if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte("64M"), 0); err != nil {
		v1root := "/sys/fs/cgroup/memory"
		if _, err := os.Stat(filepath.Join(v1root, "memory.oom_control")); err != nil {
			testutil.Missing(t, "needs a memory controller (cgroup v2 memory.max or v1 memory.oom_control)")
		}
		v1 := makeCgroup(t, v1root, "oom")
		for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
			if err := os.WriteFile(filepath.Join(v1, f), []byte("67108864"), 0); err != nil && f == "memory.limit_in_bytes" {
				t.Fatal(err)
			}
		}
		dirs = append(dirs, v1)
		spec = "cgroup: {path: " + dir + ", memory_v1: " + v1 + "}"
	}
	startIn(t, "sleep 600", dirs...)
	waitPopulated(t, dir, "1")
	sources := traceSources(t)
	w := startWatched(t, newCheck(t, spec+"\ninterval: 10s\ntimeout: 1s\nrise: 2")) // an OOM kill fails one run: rise 2 keeps it down
	if w.state() != hysteresis.Up {
		t.Fatalf("state %s before the fault: %s", w.state(), w.why())
	}
	want := "inotify"
	if len(dirs) > 1 {
		want = "oom eventfd"
	}
	testutil.WaitFor(t, 2*time.Second, "the OOM notification registered", func() bool { return sources(want) > 0 })
	hog := startIn(t, "dd if=/dev/zero of=/dev/null bs=256M count=1", dirs...)
	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dirs[len(dirs)-1], "memory.oom_control"))
			st, why := w.r.watchStatus()
			t.Logf("memory.oom_control of %s:\n%s\nwatch %s %s; sources %v", dirs[len(dirs)-1], b, st, why, sources(want))
		}
	})
	w.waitState(t, 10*time.Second, hysteresis.Down)
	t.Logf("OOM kill: down %s after the hog started (%s)", time.Since(start), w.why())
	// The cgroup stays populated (sleep 600), so the OOM kill is the only
	// cause of down. The last run's reason names it, unless a later wake
	// (the hog's exit) already ran the check again, which then counts it.
	if why := w.why(); !strings.Contains(why, "OOM-killed") && !strings.Contains(why, "1 OOM kills") {
		t.Errorf("why %q, want an OOM kill", why)
	}
	select {
	case <-hog:
	case <-time.After(5 * time.Second):
		t.Error("the hog survived")
	}
}

// TestCgroupWatchFallback: a directory that is no cgroup v2 cgroup (no
// cgroup.events) cannot be watched: polling only, said in status and metrics.
func TestCgroupWatchFallback(t *testing.T) {
	dir := t.TempDir()
	w := startWatched(t, newCheck(t, "cgroup: {path: "+dir+"}\ninterval: 100ms"))
	w.expectFallback(t, "not a cgroup v2 directory")
	if w.state() != hysteresis.Down || !strings.Contains(w.why(), "not a cgroup v2 directory") {
		t.Errorf("state %s (%s), want down: not a cgroup v2 directory", w.state(), w.why())
	}
}

func TestCgroupCheckGone(t *testing.T) {
	expect(t, newCheck(t, "cgroup: {path: /sys/fs/cgroup/hs-no-such-cgroup}"), false, "is gone")
}
