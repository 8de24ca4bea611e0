package sidecar

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// daemon is a stand-in daemon: sleep under a unique argv[0], started by the
// test as its supervisor would start it, and reaped when it dies.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// With args, it is sh (so that it can carry them) in its own process
// group, which cleanup kills whole.
func startDaemon(t testing.TB, name string, pidfile string, args ...string) *daemon {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/sleep", Args: []string{name, "600"}}
	if len(args) > 0 {
		cmd = &exec.Cmd{Path: "/bin/sh", Args: append([]string{name, "-c", "sleep 600; :", "x"}, args...),
			SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Started by this process in a group of its own, like a command of an
	// exec check: once an earlier test has made this process a child
	// subreaper, the orphan sweep after every command run must spare it.
	started.Store(d.cmd.Process.Pid, struct{}{})
	go func() { d.cmd.Wait(); close(d.done) }()
	if len(args) > 0 {
		// Ready once the shell's child has run exec: until then the child
		// has the shell's command line, so two processes match.
		pid := d.cmd.Process.Pid
		testutil.WaitFor(t, 5*time.Second, "the daemon's sleep", func() bool {
			children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
			for child := range strings.FieldsSeq(string(children)) {
				if b, _ := os.ReadFile("/proc/" + child + "/cmdline"); strings.HasPrefix(string(b), "sleep\x00") {
					return true
				}
			}
			return false
		})
	}
	t.Cleanup(func() {
		started.Delete(d.cmd.Process.Pid)
		if len(args) > 0 {
			syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		}
		d.cmd.Process.Kill()
		<-d.done
	})
	if pidfile != "" {
		if err := os.WriteFile(pidfile, fmt.Appendf(nil, "%d\n", d.cmd.Process.Pid), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (d *daemon) kill(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// TestProcessWatch: a daemon killed by SIGKILL or SIGSEGV is down within
// milliseconds although the check polls every 10 s; the supervisor (the
// test) restarts it with a new pid, the check is up again, and the watch
// follows the new pid: killing that one is seen as fast.
func TestProcessWatch(t *testing.T) {
	for _, tc := range []struct {
		how  string
		spec func(name, pidfile string) string
	}{
		{"name", func(name, _ string) string { return "process: {name: " + name + "}" }},
		{"pidfile", func(_, pidfile string) string { return "process: {pidfile: " + pidfile + "}" }},
		{"pidfile and name", func(name, pidfile string) string {
			return "process: {pidfile: " + pidfile + ", name: " + name + "}"
		}},
	} {
		t.Run(tc.how, func(t *testing.T) {
			name := fmt.Sprintf("hs-%d-daemon", os.Getpid())
			pidfile := filepath.Join(t.TempDir(), "daemon.pid")
			d := startDaemon(t, name, pidfile)
			c := newCheck(t, tc.spec(name, pidfile)+"\ninterval: 10s\ntimeout: 1s\nrise: 1")
			opened := recordPidfds(t)
			w := startWatched(t, c)
			if w.state() != hysteresis.Up {
				t.Fatalf("state %s before the fault: %s", w.state(), w.why())
			}
			for i, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSEGV} {
				pid := int64(d.cmd.Process.Pid)
				testutil.WaitFor(t, 10*time.Second, "a pidfd of the daemon", func() bool { return opened.has(pid) })
				d.kill(t, sig)
				took := w.waitState(t, time.Second, hysteresis.Down)
				t.Logf("%s: down after %s (%s)", sig, took, w.why())
				d = startDaemon(t, name, pidfile)
				took = w.waitState(t, 2*time.Second, hysteresis.Up)
				t.Logf("restarted as pid %d: up after %s (%s), round %d", d.cmd.Process.Pid, took, w.why(), i)
			}
			if got := w.metric("healthswitch_sidecar_check_wakes_total"); got < 4 {
				t.Errorf("check_wakes_total = %v, want at least 4 (two exits, two restarts)", got)
			}
		})
	}
}

// recordPidfds wraps pidfd_open to remember every pid opened, so a test
// can wait for the watch to hold the daemon's (other watchers, of tests
// that ran before, may open pidfds meanwhile).
func recordPidfds(t testing.TB) *pidSetOpened {
	opened := &pidSetOpened{}
	saved := pidfdOpen
	pidfdOpen = func(pid, flags int) (int, error) {
		opened.pids.Store(int64(pid), true)
		return saved(pid, flags)
	}
	t.Cleanup(func() { pidfdOpen = saved })
	return opened
}

type pidSetOpened struct{ pids sync.Map }

func (p *pidSetOpened) has(pid int64) bool { _, ok := p.pids.Load(pid); return ok }

// TestProcessWatchFallback: a kernel without pidfds (a test double of
// pidfd_open answering ENOSYS) leaves the check polled; it still sees the
// kill, within its 100 ms period.
func TestProcessWatchFallback(t *testing.T) {
	saved := pidfdOpen
	pidfdOpen = func(int, int) (int, error) { return -1, unix.ENOSYS }
	t.Cleanup(func() { pidfdOpen = saved })
	name := fmt.Sprintf("hs-%d-fallback", os.Getpid())
	d := startDaemon(t, name, "")
	w := startWatched(t, newCheck(t, "process: {name: "+name+"}\ninterval: 100ms"))
	w.expectFallback(t, "pidfd_open: function not implemented")
	d.kill(t, syscall.SIGKILL)
	w.waitState(t, time.Second, hysteresis.Down)
}

func TestProcessCheck(t *testing.T) {
	dir := t.TempDir()
	name := fmt.Sprintf("hs-%d-probe", os.Getpid())
	d := startDaemon(t, name, filepath.Join(dir, "ok.pid"))
	os.WriteFile(filepath.Join(dir, "bad.pid"), []byte("nope\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "other.pid"), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644)
	for _, tc := range []struct {
		spec    string
		healthy bool
		why     string
	}{
		{"{name: " + name + "}", true, fmt.Sprintf("running as pid %d", d.cmd.Process.Pid)},
		{"{name: " + name + ", match: '600'}", true, "running"},
		{"{name: " + name + ", match: nope}", false, name + " is running but without nope"},
		{"{name: hs-no-such-daemon}", false, "hs-no-such-daemon is not running"},
		{"{pidfile: " + dir + "/ok.pid}", true, "running as pid"},
		{"{pidfile: " + dir + "/none.pid}", false, "no pidfile"},
		{"{pidfile: " + dir + "/bad.pid}", false, `"nope" is not a pid`},
		{"{pidfile: " + dir + "/other.pid, name: " + name + "}", false, "is another process"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			expect(t, newCheck(t, "process: "+tc.spec), tc.healthy, tc.why)
		})
	}
}

// socketServer is a stand-in for a daemon's unix socket (ovsdb-server's
// db.sock, crio.sock): it accepts connections and holds them until their
// peer closes them; stop closes
// the listener and every connection, as the daemon's death would.
type socketServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func serveSocket(t testing.TB, path string) *socketServer {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &socketServer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.hold(c)
		}
	}()
	t.Cleanup(s.stop)
	return s
}

// hold keeps c until the peer closes it, then forgets it.
func (s *socketServer) hold(c net.Conn) {
	c.Read(make([]byte, 1))
	c.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, held := range s.conns {
		if held == c {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			break
		}
	}
}

func (s *socketServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// TestDaemonPresetsWatch: the ovs and crio presets watch their daemon's pid
// and hold a connection to its socket; the daemon killed, or its socket's
// server gone, is down within milliseconds under a 10 s poll, and both come
// back.
func TestDaemonPresetsWatch(t *testing.T) {
	systemctl := fixture(t, "fixture-systemctl")
	for _, preset := range []string{"ovs", "crio"} {
		t.Run(preset, func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, preset+".sock")
			name := fmt.Sprintf("hs-%d-%s", os.Getpid(), preset)
			spec := map[string]string{
				"ovs":  "ovs: {process: " + name + ", match: 'unix:" + sock + "', socket: " + sock + "}",
				"crio": "crio: {process: " + name + ", socket: " + sock + ", command: [" + systemctl + ", running]}",
			}[preset]
			srv := serveSocket(t, sock)
			d := startDaemon(t, name, "", "unix:"+sock)
			opened := recordPidfds(t)
			w := startWatched(t, newCheck(t, "preset: "+preset+"\n"+spec+"\ninterval: 10s\ntimeout: 1s\nrise: 1"))
			if w.state() != hysteresis.Up {
				t.Fatalf("state %s before the fault: %s", w.state(), w.why())
			}
			pid := int64(d.cmd.Process.Pid)
			testutil.WaitFor(t, 10*time.Second, "a pidfd of the daemon", func() bool { return opened.has(pid) })
			if preset == "ovs" { // crio's probe asks systemd (here a fixture), not /proc
				d.kill(t, syscall.SIGKILL)
				t.Logf("daemon killed: down after %s (%s)", w.waitState(t, time.Second, hysteresis.Down), w.why())
				d = startDaemon(t, name, "", "unix:"+sock)
				t.Logf("daemon restarted: up after %s", w.waitState(t, 2*time.Second, hysteresis.Up))
			}
			testutil.WaitFor(t, 2*time.Second, "a held connection", func() bool { srv.mu.Lock(); defer srv.mu.Unlock(); return len(srv.conns) > 0 })
			srv.stop()
			t.Logf("socket server gone: down after %s (%s)", w.waitState(t, time.Second, hysteresis.Down), w.why())
			serveSocket(t, sock)
			if st, why := w.r.watchStatus(); st != watchStateEvents {
				t.Errorf("watch %s (%s), want events", st, why)
			}
			t.Logf("socket server back: up after %s", w.waitState(t, 3*time.Second, hysteresis.Up))
		})
	}
}

// TestProcessWatchTakesTheChecksPid: the watch holds a process that
// matched and then ran exec into another program (a daemon's forked child
// does so, and a pidfd says nothing of it). The check's next run (here
// woken by hand, as the safety poll would) finds no daemon, and the watch
// lets go of that process: a daemon started afterwards is up at once, not
// at the next poll 10 s later.
func TestProcessWatchTakesTheChecksPid(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "go")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("hs-%d-execer", os.Getpid())
	// Matches (argv[0] name, an argument with the match) until a line
	// arrives on the fifo, then becomes a plain sleep.
	changer := &exec.Cmd{Path: "/bin/sh", Args: []string{name, "-c", "read line < $1; exec sleep 600", "x", fifo, "--daemon"}}
	if err := changer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { changer.Process.Kill(); changer.Wait() })
	opened := recordPidfds(t)
	w := startWatched(t, newCheck(t, "process: {name: "+name+", match: '--daemon'}\ninterval: 10s\ntimeout: 1s\nfall: 1\nrise: 1"))
	testutil.WaitFor(t, 5*time.Second, "a pidfd of the matching process", func() bool { return opened.has(int64(changer.Process.Pid)) })
	if w.state() != hysteresis.Up {
		t.Fatalf("state %s: %s", w.state(), w.why())
	}
	if err := os.WriteFile(fifo, []byte("now\n"), 0); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the process ran exec", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", changer.Process.Pid))
		return strings.HasPrefix(string(b), "sleep\x00")
	})
	w.r.wake() // the safety poll
	w.waitState(t, 2*time.Second, hysteresis.Down)
	startDaemon(t, name, "", "--daemon")
	t.Logf("daemon started: up after %s", w.waitState(t, 2*time.Second, hysteresis.Up))
}

// TestProcessWatchOtherNamespace: a procfs that is not of the sidecar's PID
// namespace (here a copy of a few of its files: its "self" is not us) cannot
// back a pidfd watch: polling only.
func TestProcessWatchOtherNamespace(t *testing.T) {
	proc := t.TempDir()
	os.Symlink("1", filepath.Join(proc, "self"))
	w := startWatched(t, newCheck(t, "process: {name: hs-nothing, proc: "+proc+"}"))
	w.expectFallback(t, "is not the procfs of this PID namespace")
}

// A process whose match comes after a long argument (past the buffer the
// scan reads command lines into) is still found; one without it is not.
func TestProcessLongCommandLine(t *testing.T) {
	name := fmt.Sprintf("hs-%d-long", os.Getpid())
	long := strings.Repeat("x", 3*cmdlineRead)
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{name, "-c", "sleep 30; :", long, "--config=/etc/wanted.conf"}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	expect(t, newCheck(t, "process: {name: "+name+", match: wanted.conf}\ninterval: 5s"), true, "running as pid")
	expect(t, newCheck(t, "process: {name: "+name+", match: other.conf}\ninterval: 5s"), false, "running but without other.conf")
}

// A daemon that exits while the watch takes its pidfd (after pidfd_open,
// before the watch's second look at it) is down at once, not at the next
// poll 10 s later: the watch that sees it gone wakes the check.
func TestProcessWatchExitWhileOpening(t *testing.T) {
	name := fmt.Sprintf("hs-%d-racer", os.Getpid())
	d := startDaemon(t, name, "")
	saved := pidfdOpen
	var once sync.Once
	pidfdOpen = func(pid, flags int) (int, error) {
		fd, err := saved(pid, flags)
		if pid == d.cmd.Process.Pid {
			once.Do(func() { d.cmd.Process.Kill(); <-d.done }) // gone, and reaped, before the second look
		}
		return fd, err
	}
	t.Cleanup(func() { pidfdOpen = saved })
	w := startWatched(t, newCheck(t, "process: {name: "+name+"}\ninterval: 10s\ntimeout: 1s\nfall: 1"))
	took := w.waitState(t, 2*time.Second, hysteresis.Down)
	t.Logf("down after %s (%s)", took, w.why())
}
