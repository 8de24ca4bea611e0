package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// ProcessSpec: a daemon is running, found by its pidfile or by its program
// name (and an argument), read from procfs without forking. Its event source
// is a pidfd (watch_process.go).
type ProcessSpec struct {
	procTarget `yaml:",inline"`
}

// procTarget says how to find a daemon. The ovs and crio presets use it too.
type procTarget struct {
	Pidfile string `yaml:"pidfile"` // a file holding the pid; with name, the process must also be named so
	Name    string `yaml:"name"`    // program name (argv[0] base name)
	Match   string `yaml:"match"`   // with name: an argument must contain this
	Proc    string `yaml:"proc"`    // where procfs is mounted, default /proc

	// found is where the check last found the daemon (0: nowhere): one
	// read instead of a scan next time. watched is the pid the watch holds
	// a pidfd of (0: none), and recheck has a token when the check found
	// the daemon elsewhere: the process the watch holds is not the daemon
	// (say, a child the daemon forked that matched until it ran exec, which
	// no pidfd tells), and the watch takes the check's. A wrong pid is thus
	// followed until the next run of the check, a safety poll at most.
	found, watched atomic.Int64
	recheck        chan struct{}
}

func (s *ProcessSpec) compile(*Check) error {
	if s.Pidfile == "" && s.Name == "" {
		return errors.New("pidfile or name: one is required")
	}
	if s.Match != "" && s.Name == "" {
		return errors.New("match: needs name")
	}
	s.procTarget.defaults()
	return nil
}

func (t *procTarget) defaults() {
	if t.Proc == "" {
		t.Proc = "/proc"
	}
	t.recheck = make(chan struct{}, 1)
}

// find is the check's resolve: it starts from where the daemon was last
// found, and tells the watch when that is not the process it holds.
func (t *procTarget) find(ctx context.Context) (int, error) {
	pid, err := t.resolve(ctx, int(t.found.Load()))
	t.found.Store(int64(pid))
	if w := t.watched.Load(); w != 0 && w != int64(pid) {
		signal(t.recheck)
	}
	return pid, err
}

func probeProcess(ctx context.Context, c *Check) Result {
	s := c.Process
	pid, err := s.find(ctx)
	if err != nil {
		return fail(err)
	}
	if s.Name == "" {
		return pass("running as pid %d", pid)
	}
	return pass("%s running as pid %d", s.Name, pid)
}

// resolve finds the daemon's pid; last, when it still matches, saves a
// scan of procfs.
func (t *procTarget) resolve(ctx context.Context, last int) (int, error) {
	if t.Pidfile != "" {
		return t.fromPidfile()
	}
	if last > 0 && t.matches(last) == matched {
		return last, nil
	}
	return t.scan(ctx)
}

func (t *procTarget) fromPidfile() (int, error) {
	b, err := os.ReadFile(t.Pidfile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("not running: no pidfile %s", t.Pidfile)
		}
		return 0, fmt.Errorf("pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s: %q is not a pid", t.Pidfile, firstLine(b))
	}
	if t.Name != "" {
		if t.matches(pid) != matched {
			return 0, fmt.Errorf("%s is not running: pid %d of %s is another process", t.Name, pid, t.Pidfile)
		}
		return pid, nil
	}
	if !procAlive(t.Proc, pid) {
		return 0, fmt.Errorf("not running: pid %d of %s is gone", pid, t.Pidfile)
	}
	return pid, nil
}

// procAlive says whether pid exists and is not a zombie (a killed daemon whose
// parent has not reaped it yet is dead to us).
func procAlive(proc string, pid int) bool {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// scan returns the pid of a process named t.Name, one of whose arguments
// contains t.Match. It reads every /proc/PID/cmdline, so it is written to
// be cheap: a fault found by an event runs it at once, and a daemon that
// is gone is known only once every process has been looked at.
func (t *procTarget) scan(ctx context.Context) (int, error) {
	dir, err := os.Open(t.Proc)
	if err != nil {
		return 0, err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, cmdlineRead)
	sawName := false
	for _, name := range names {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if name[0] < '1' || name[0] > '9' {
			continue
		}
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		switch t.matchesBuf(pid, buf) {
		case matched:
			return pid, nil
		case nameOnly:
			sawName = true
		}
	}
	if sawName {
		return 0, fmt.Errorf("%s is running but without %s", t.Name, t.Match)
	}
	return 0, errors.New(t.Name + " is not running")
}

// cmdlineRead is the buffer a command line is read into; a longer one is
// read again whole.
const cmdlineRead = 4096

type procMatch int

const (
	noMatch  procMatch = iota
	nameOnly           // the program, without the argument
	matched
)

// matches reads one /proc/PID/cmdline. A process may exit between listing
// and reading: that is no match; so is a zombie (its cmdline is empty).
func (t *procTarget) matches(pid int) procMatch {
	return t.matchesBuf(pid, make([]byte, cmdlineRead))
}

func (t *procTarget) matchesBuf(pid int, buf []byte) procMatch {
	path := filepath.Join(t.Proc, strconv.Itoa(pid), "cmdline")
	cmdline := readProcFile(path, buf)
	if len(cmdline) == len(buf) { // longer than the buffer: read it all
		cmdline, _ = os.ReadFile(path)
	}
	if len(cmdline) == 0 {
		return noMatch
	}
	prog, rest, _ := bytes.Cut(cmdline, []byte{0})
	if string(prog[bytes.LastIndexByte(prog, '/')+1:]) != t.Name {
		return noMatch
	}
	if t.Match == "" {
		return matched
	}
	for arg := range bytes.SplitSeq(rest, []byte{0}) {
		if bytes.Contains(arg, []byte(t.Match)) {
			return matched
		}
	}
	return nameOnly
}

// readProcFile reads up to len(buf) bytes of a /proc file into buf, with
// three system calls and no allocation; nil when it cannot be read.
func readProcFile(path string, buf []byte) []byte {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	return buf[:n]
}
