// Package demo starts a complete healthswitch setup on loopback: the rebuilt
// CoreDNS with the healthswitch plugin, simulated clusters (an application
// server each) and their sidecars. `make demo`, `make demo-failover`,
// `make bench` and the end-to-end tests in test/ all build on it.
package demo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopBound is how long a child gets to exit after SIGTERM before its whole
// process group is killed.
const stopBound = 3 * time.Second

// Proc is a child process in its own process group, so stopping it also
// stops anything it started, and a Ctrl-C on the terminal reaches only us:
// we decide the order things stop in.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProc starts argv with its output going to out. The child is killed
// by the kernel if this process dies without stopping it.
func StartProc(name string, out io.Writer, argv ...string) (*Proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id (and process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the child has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the child has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process group, and SIGKILL after stopBound.
func (p *Proc) Stop() error {
	return p.signalAndWait(syscall.SIGTERM, stopBound)
}

// Kill kills the process group at once, as a crash would.
func (p *Proc) Kill() error {
	return p.signalAndWait(syscall.SIGKILL, stopBound)
}

func (p *Proc) signalAndWait(sig syscall.Signal, bound time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.Pid(), sig)
	select {
	case <-p.done:
	case <-time.After(bound):
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
	}
	// Anything the child left in its group goes too.
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	return nil
}

// StatFields is the fields of a /proc stat file (/proc/PID/stat, or a
// thread's /proc/PID/task/TID/stat) after the command name, which is in
// parentheses and may hold spaces: the first is the state (field 3 of
// proc(5)), the second the parent's pid.
func StatFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j := bytes.LastIndexByte(b, ')')
	if j < 0 {
		return nil, fmt.Errorf("%s: unexpected /proc stat format", path)
	}
	return strings.Fields(string(b[j+1:])), nil
}

// CPUTime is the user+system CPU the process has used so far.
func CPUTime(pid int) (time.Duration, error) { return statCPU(pid, 11) }

// ChildCPUTime is the user+system CPU of the children the process has
// waited for (a command it forked and reaped).
func ChildCPUTime(pid int) (time.Duration, error) { return statCPU(pid, 13) }

// statCPU is the sum of two clock-tick fields of /proc/PID/stat, the i-th
// and the next counted from the field after the command name (utime 11,
// cutime 13).
func statCPU(pid, i int) (time.Duration, error) {
	f, err := StatFields(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	if len(f) < i+2 {
		return 0, errors.New("unexpected /proc stat format")
	}
	a, err1 := strconv.ParseInt(f[i], 10, 64)
	c, err2 := strconv.ParseInt(f[i+1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc stat format: %q", f)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(a+c) * time.Second / clockTicks, nil
}

// RSS is the resident set size of the process in bytes.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}
