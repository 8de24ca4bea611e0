package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// serverEnv makes the test binary a server process (TestMain): an HTTP
// server with keep-alive, or a TCP server that holds connections, bound
// with SO_REUSEPORT so a second one can take over the port as a fast
// restart does. A real process, so that killing it is a real death.
const serverEnv = "HS_TEST_SERVER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(serverEnv); spec != "" {
		serveChild(spec)
		return
	}
	os.Exit(m.Run())
}

func serveChild(spec string) {
	kind, addr, _ := strings.Cut(spec, " ")
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	if kind == "http" {
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
		return
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { c.Read(make([]byte, 1)); c.Close() }()
	}
}

// serverProc is one server child process.
type serverProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startServer(t testing.TB, kind, addr string) *serverProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serverEnv+"="+kind+" "+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, done: make(chan struct{})}
	line, _ := bufio.NewReader(out).ReadString('\n')
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("server %s %s: %q", kind, addr, line)
	}
	return p
}

func (p *serverProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// TestHeldConnectionWatch: an HTTP or TCP server process killed is down
// through the held connection within milliseconds under a 10 s poll; the
// server started again is up. A server restarted fast on the same port (the
// new process listening before the old one dies) is never reported down:
// the event runs the check, and the check finds the new server.
func TestHeldConnectionWatch(t *testing.T) {
	for _, kind := range []string{"http", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
			spec := map[string]string{"http": "http: {url: 'http://" + addr + "/healthz'}", "tcp": "tcp: {address: '" + addr + "'}"}[kind]
			srv := startServer(t, kind, addr)
			sources := traceSources(t)
			w := startWatched(t, newCheck(t, spec+"\ninterval: 10s\ntimeout: 1s\nrise: 1"))
			if w.state() != hysteresis.Up {
				t.Fatalf("state %s before the fault: %s", w.state(), w.why())
			}
			testutil.WaitFor(t, 2*time.Second, "a held connection", func() bool { return sources("held connection") == 1 })
			srv.kill()
			t.Logf("server killed: down after %s (%s)", w.waitState(t, time.Second, hysteresis.Down), w.why())
			srv = startServer(t, kind, addr)
			t.Logf("server back: up after %s (%s)", w.waitState(t, 2*time.Second, hysteresis.Up), w.why())
			testutil.WaitFor(t, 2*time.Second, "the connection held again", func() bool { return sources("held connection") >= 2 })

			// A fast restart: the new process listens first.
			_, _, _, runs0, _ := w.r.snapshot()
			next := startServer(t, kind, addr)
			srv.kill()
			testutil.WaitFor(t, 2*time.Second, "the check run on the close", func() bool { _, _, _, n, _ := w.r.snapshot(); return n > runs0 })
			testutil.WaitFor(t, 2*time.Second, "the connection held to the new server", func() bool { return sources("held connection") >= 3 })
			if got := w.metric("healthswitch_sidecar_check_transitions_total"); got != 3 {
				t.Errorf("%v transitions, want 3 (up at start, then down and up once): the fast restart was reported (%s)", got, w.why())
			}
			if w.state() != hysteresis.Up {
				t.Errorf("state %s after a fast restart (%s)", w.state(), w.why())
			}
			_ = next
		})
	}
}

// TestHeldConnectionFallback: a server that cannot keep an idle connection
// (HTTP without keep-alive; a TCP server closing every connection at once)
// leaves the check polled, said in status and metrics.
func TestHeldConnectionFallback(t *testing.T) {
	t.Run("http without keep-alive", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
		srv.Config.SetKeepAlivesEnabled(false)
		srv.Start()
		t.Cleanup(srv.Close)
		w := startWatched(t, newCheck(t, "http: {url: '"+srv.URL+"'}\ninterval: 1s"))
		w.expectFallback(t, "no keep-alive")
		if w.state() != hysteresis.Up {
			t.Errorf("state %s (%s): the check itself still passes", w.state(), w.why())
		}
	})
	t.Run("tcp closing at once", func(t *testing.T) {
		w := startWatched(t, newCheck(t, "tcp: {address: '"+droppingTCPServer(t)+"'}\ninterval: 1s"))
		w.expectFallback(t, "closed 3 new connections at once")
	})
}

// TestHeldConnectionTLS: an https target is held over TLS; one whose
// certificate does not verify cannot be watched (polling only).
func TestHeldConnectionTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(srv.Close)
	w := startWatched(t, newCheck(t, "http: {url: '"+srv.URL+"'}\ninterval: 1s"))
	w.expectFallback(t, "certificate")
}
