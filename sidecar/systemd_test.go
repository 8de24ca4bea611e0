package sidecar

import (
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
