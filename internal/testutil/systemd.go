package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Systemd is a real systemd, run as a user instance for the test's user
// (root) in a mount namespace of its own: there /run/systemd/system exists,
// the mark of a system booted with systemd that a user instance asks for,
// without the machine's own /run/systemd changing. Units are started with
// systemd-run --user and read with systemctl --user, or over Socket, the
// manager's private D-Bus socket.
type Systemd struct {
	Runtime string // its XDG_RUNTIME_DIR
	Socket  string // Runtime/systemd/private
	t       testing.TB
	cmd     *exec.Cmd
	units   []string
}

// StartSystemdUser starts a systemd user instance and waits until its
// private socket answers systemctl.
func StartSystemdUser(t testing.TB) *Systemd {
	t.Helper()
	NeedRoot(t)
	Need(t, "systemctl", "systemd-run", "unshare")
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		Missing(t, "needs /lib/systemd/systemd (Debian systemd)")
	}
	// Short: the socket path inside it must fit a unix address.
	dir, err := os.MkdirTemp("", "hs-sd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d := &Systemd{Runtime: dir, Socket: filepath.Join(dir, "systemd", "private"), t: t}
	d.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		"mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec /lib/systemd/systemd --user")
	d.cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir)
	// In the test's own process group: a sidecar under test that is a
	// child subreaper sweeps children outside its group as its commands'
	// orphans.
	StartLogged(t, "systemd --user", d.cmd)
	t.Cleanup(d.stop) // runs before StartLogged's kill: units are stopped first
	WaitFor(t, 10*time.Second, "systemd --user answering on "+d.Socket, func() bool {
		return d.answers()
	})
	return d
}

func (d *Systemd) answers() bool {
	cmd := exec.Command("systemctl", "--user", "show", "--property=Version")
	cmd.Env = d.env()
	out, err := cmd.Output()
	return err == nil && strings.HasPrefix(string(out), "Version=")
}

func (d *Systemd) env() []string { return append(os.Environ(), "XDG_RUNTIME_DIR="+d.Runtime) }

// Systemctl runs systemctl --user with args and returns its output; a
// non-zero exit is not an error (systemctl status exits 3 for an inactive
// unit).
func (d *Systemd) Systemctl(args ...string) string {
	d.t.Helper()
	cmd := exec.Command("systemctl", append([]string{"--user"}, args...)...)
	cmd.Env = d.env()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		d.t.Fatalf("systemctl %v: %v", args, err)
	}
	return string(out)
}

// Run starts argv as the transient service unit (NAME.service), stopped at
// cleanup.
func (d *Systemd) Run(unit string, argv ...string) {
	d.t.Helper()
	cmd := exec.Command("systemd-run", append([]string{"--user", "--unit", unit, "--quiet"}, argv...)...)
	cmd.Env = d.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		d.t.Fatalf("systemd-run %s %v: %v\n%s", unit, argv, err, out)
	}
	d.units = append(d.units, unit)
}

// Env is the environment that reaches this instance with systemctl --user.
func (d *Systemd) Env() []string { return d.env() }

func (d *Systemd) stop() {
	for _, u := range d.units {
		cmd := exec.Command("systemctl", "--user", "stop", u)
		cmd.Env = d.env()
		cmd.Run()
	}
	// SIGTERM: the manager stops what it runs, then exits.
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		fmt.Fprintln(os.Stderr, "systemd --user did not exit within 5 s of SIGTERM: killed")
	}
}
