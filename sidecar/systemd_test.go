package sidecar

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// The crio preset against a real systemd (a user instance): the unit's
// state read over the manager's private socket without forking, named as
// systemctl's Active: line names it, and the same verdict as forking
// systemctl status for each state.
func TestCRIOPresetRealSystemd(t *testing.T) {
	sd := testutil.StartSystemdUser(t)
	sd.Run("hs-crio", "sleep", "600")
	sd.Run("hs-fails", "sh", "-c", "exit 3")
	testutil.WaitFor(t, 5*time.Second, "hs-fails failed", func() bool {
		return sd.Systemctl("is-failed", "hs-fails") == "failed\n"
	})
	t.Setenv("XDG_RUNTIME_DIR", sd.Runtime) // for systemctl --user in the forking checks
	native := func(unit string) *Check {
		c := newCheck(t, "preset: crio\ncrio: {unit: "+unit+", systemd_socket: "+sd.Socket+"}\ninterval: 5s")
		t.Cleanup(c.Close)
		return c
	}
	forked := func(unit string) *Check {
		return newCheck(t, "preset: crio\ncrio: {unit: "+unit+", command: [systemctl, --user, status, --no-pager, --lines=0, "+unit+"]}\ninterval: 5s")
	}
	for _, tc := range []struct {
		unit, why string
		healthy   bool
	}{
		{"hs-crio", "hs-crio active (running)", true},
		{"hs-fails", "hs-fails is failed (Result: exit-code)", false},
	} {
		c := native(tc.unit)
		onPath(t, t.TempDir(), func() {
			expect(t, c, tc.healthy, tc.why)
			expect(t, c, tc.healthy, tc.why) // again, on the kept connection
		})
		expect(t, forked(tc.unit), tc.healthy, tc.why)
	}
	expect(t, native("hs-none"), false, "unit hs-none.service not found")

	// The manager re-executed between two runs (as on a systemd upgrade):
	// the kept connection is dead, but the manager is back, so the next
	// run passes.
	again := native("hs-crio")
	expect(t, again, true, "hs-crio active (running)")
	sd.Systemctl("daemon-reexec")
	expect(t, again, true, "hs-crio active (running)")

	// Stopped: down at the next run on the same connection.
	c := native("hs-crio")
	expect(t, c, true, "hs-crio active (running)")
	sd.Systemctl("stop", "hs-crio")
	expect(t, c, false, "hs-crio")

	// The manager gone: down, naming the socket; a socket named in the
	// config is not replaced by forking systemctl.
	missing := newCheck(t, "preset: crio\ncrio: {unit: crio, systemd_socket: /nonexistent/private}\ninterval: 5s")
	expect(t, missing, false, "no systemd socket: /nonexistent/private")
}

func TestUnitPath(t *testing.T) {
	for unit, want := range map[string]string{
		"crio.service":          "/org/freedesktop/systemd1/unit/crio_2eservice",
		"containerd.service":    "/org/freedesktop/systemd1/unit/containerd_2eservice",
		"kubelet-x@a-b.service": "/org/freedesktop/systemd1/unit/kubelet_2dx_40a_2db_2eservice",
		"":                      "/org/freedesktop/systemd1/unit/_",
	} {
		if got := string(unitPath(unit)); got != want {
			t.Errorf("unitPath(%q) = %s, want %s", unit, got, want)
		}
	}
	if unitName("crio") != "crio.service" || unitName("docker.socket") != "docker.socket" {
		t.Error("unitName")
	}
}

// A manager that takes the connection but never answers (PID 1 busy)
// does not hold the run past its context: the dial gives up at the
// deadline and says so. (serveSocket would not do here: it hangs up on the
// first byte, the client's AUTH.) A late connection is closed by within's
// abandon, which TestWithinAbandons covers.
func TestSystemdDialBounded(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "private")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	u := &systemdUnits{socket: sock}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	conn, err := u.dial(ctx)
	if took := time.Since(start); err == nil || !errors.Is(err, context.DeadlineExceeded) || took > time.Second {
		t.Fatalf("dial: %v, %v after %s: want the deadline, at once", conn, err, took)
	}
	if !strings.Contains(err.Error(), "systemd "+sock) {
		t.Errorf("error %q does not name the socket", err)
	}
}

func TestWithinAbandons(t *testing.T) {
	release, abandoned := make(chan struct{}), make(chan int, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	v, err := within(ctx, func() (int, error) { <-release; return 7, nil }, func(late int) { abandoned <- late })
	if v != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("within: %d, %v: want 0 and the deadline", v, err)
	}
	close(release)
	select {
	case late := <-abandoned:
		if late != 7 {
			t.Errorf("abandon got %d, want 7", late)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late result was not handed to abandon")
	}
	if v, err := within(context.Background(), func() (int, error) { return 3, nil }, nil); v != 3 || err != nil {
		t.Errorf("within: %d, %v: want 3", v, err)
	}
}
