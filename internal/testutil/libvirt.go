package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Libvirtd is a throwaway libvirt daemon whose sockets live in a temp dir.
// Its test driver, reached through the daemon as URI, has one domain "test",
// running. The driver's state lasts while some connection is open.
type Libvirtd struct {
	URI  string // test+unix:///default?socket=...
	Sock string
	dir  string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	t    testing.TB
}

// StartLibvirtd starts libvirtd (Debian libvirt-daemon) as root with its
// sockets in a temp dir, and kills it in Cleanup. libvirtd's QEMU driver
// refuses to start without the libvirt-qemu user and group and
// /var/log/libvirt, which `make deps` creates.
func StartLibvirtd(t testing.TB) *Libvirtd {
	t.Helper()
	NeedRoot(t)
	Need(t, "virsh")
	if err := LibvirtdMissing(); err != nil {
		Missing(t, err.Error())
	}
	d, err := StartLibvirtdAt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d.t = t
	t.Cleanup(d.Kill)
	return d
}

// LibvirtdMissing says what StartLibvirtdAt lacks on this machine, if
// anything (root aside).
func LibvirtdMissing() error {
	if _, err := exec.LookPath("virsh"); err != nil {
		return errors.New("needs virsh")
	}
	if _, err := os.Stat("/usr/sbin/libvirtd"); err != nil {
		return errors.New("needs /usr/sbin/libvirtd (Debian libvirt-daemon)")
	}
	if _, err := user.Lookup("libvirt-qemu"); err != nil {
		return errors.New("needs the libvirt-qemu user for libvirtd (make deps creates it)")
	}
	return nil
}

// StartLibvirtdAt starts libvirtd with its config, log and sockets in dir,
// for callers without a testing.TB (the bench); they Kill it. Virsh and
// Start need the TB version.
func StartLibvirtdAt(dir string) (*Libvirtd, error) {
	conf := filepath.Join(dir, "libvirtd.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "unix_sock_dir = %q\nlisten_tls = 0\nlisten_tcp = 0\nlog_outputs = \"1:file:%s/libvirtd.log\"\n", dir, dir), 0o600); err != nil {
		return nil, err
	}
	d := &Libvirtd{Sock: filepath.Join(dir, "libvirt-sock"), dir: dir}
	d.URI = "test+unix:///default?socket=" + d.Sock
	if err := d.start(); err != nil {
		d.Kill()
		return nil, err
	}
	return d, nil
}

// Start starts the daemon and waits until its test driver answers.
func (d *Libvirtd) Start() {
	d.t.Helper()
	if err := d.start(); err != nil {
		d.t.Fatal(err)
	}
}

func (d *Libvirtd) start() error {
	os.Remove(d.Sock)
	d.log = &bytes.Buffer{}
	d.cmd = exec.Command("/usr/sbin/libvirtd", "--config", filepath.Join(d.dir, "libvirtd.conf"), "--pid-file", filepath.Join(d.dir, "pid"))
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	// A test process killed before its cleanup must not leave a daemon
	// behind: the next one's would not start.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command("virsh", "-c", d.URI, "list", "--all").CombinedOutput()
		if err == nil && bytes.Contains(out, []byte("test")) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("libvirtd did not answer within 30s: %v\n%s\nlibvirtd: %s", err, out, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills the daemon with SIGKILL and waits for it.
func (d *Libvirtd) Kill() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
		d.cmd = nil
	}
}

// Virsh runs virsh against the daemon's test driver and fails the test if
// it fails.
func (d *Libvirtd) Virsh(args ...string) string {
	d.t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", d.URI}, args...)...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("virsh %v: %v\n%s", args, err, out)
	}
	return string(out)
}
