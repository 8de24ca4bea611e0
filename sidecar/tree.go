package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A command run's processes form a tree that must not outlive the run. A
// process group is not enough: a child can leave it with setsid(1), and is
// then re-parented to init and lives on, one leaked process per run. So each
// run gets its own cgroup (v2) where the system allows one: whatever the
// command starts, setsid or not, is in it, and cgroup.kill ends it all. Where
// there is no writable cgroup v2 (a container with /sys/fs/cgroup read-only),
// the sidecar becomes a child subreaper instead: orphans of its commands are
// re-parented to it, and each run ends by killing and reaping them.

// tree is the processes of one command run.
type tree struct {
	pid int
	cg  string // the run's cgroup directory; "" in subreaper mode
}

// cgroupsOff is set when cgroups cannot be used (or by tests, to exercise
// the subreaper mode).
var cgroupsOff atomic.Bool

var (
	cgroupRuns atomic.Uint64
	// startMu keeps the orphan sweep from taking a command that was just
	// forked for an orphan: starts share it, the sweep holds it alone.
	startMu sync.RWMutex
	started pidSet
)

const cgroup2Magic = 0x63677270 // CGROUP2_SUPER_MAGIC

// cgroupParent is the cgroup v2 directory of this process, under which the
// runs' cgroups are made, or "" when there is none.
var cgroupParent = sync.OnceValue(func() string {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	var rel string
	for line := range strings.Lines(string(self)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			rel = p
		}
	}
	// Pure v2 mounts the hierarchy at /sys/fs/cgroup, hybrid systems at
	// /sys/fs/cgroup/unified.
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st syscall.Statfs_t
		if syscall.Statfs(root, &st) == nil && st.Type == cgroup2Magic {
			return filepath.Join(root, rel)
		}
	}
	return ""
})

// startInTree starts argv with its output going to out, in a process group
// and, where possible, in a new cgroup of its own.
func startInTree(argv []string, out *os.File) (*exec.Cmd, *tree, error) {
	startMu.RLock()
	defer startMu.RUnlock()
	cmd := command(argv, out)
	if cmd.Err != nil {
		return nil, nil, cmd.Err // not found: nothing to start
	}
	if dir, fd, ok := newRunCgroup(); ok {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
		err := startNormal(cmd)
		syscall.Close(fd)
		if err == nil {
			return cmd, started.add(cmd, dir), nil
		}
		os.Remove(dir)
		// Either the command cannot start at all, or the kernel would not
		// start it in the cgroup (an old kernel, a delegation that forbids
		// it). One try without tells which.
		cmd = command(argv, out)
		becomeSubreaper()
		if err := startNormal(cmd); err != nil {
			return nil, nil, err
		}
		cgroupsOff.Store(true) // it was the cgroup: from now on, the subreaper way
		return cmd, started.add(cmd, ""), nil
	}
	becomeSubreaper()
	if err := startNormal(cmd); err != nil {
		return nil, nil, err
	}
	return cmd, started.add(cmd, ""), nil
}

// pidSet is the commands this process runs, which the orphan sweep spares.
type pidSet struct{ sync.Map }

func (s *pidSet) add(cmd *exec.Cmd, cg string) *tree {
	s.Store(cmd.Process.Pid, struct{}{})
	return &tree{pid: cmd.Process.Pid, cg: cg}
}

func command(argv []string, out *os.File) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// newRunCgroup makes a cgroup for one run and opens it for clone3.
func newRunCgroup() (dir string, fd int, ok bool) {
	parent := cgroupParent()
	if parent == "" || cgroupsOff.Load() {
		return "", -1, false
	}
	dir = filepath.Join(parent, fmt.Sprintf("hs-exec-%d-%d", os.Getpid(), cgroupRuns.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		cgroupsOff.Store(true)
		return "", -1, false
	}
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		return "", -1, false
	}
	return dir, fd, true
}

// subreaping is set once this process is a child subreaper: from then on
// every run ends with the orphan sweep, cgroup or not, or the processes a
// cgroup.kill ended would stay zombies of the sidecar.
var subreaping atomic.Bool

var becomeSubreaper = sync.OnceFunc(func() {
	subreaping.Store(setChildSubreaper() == nil)
})

func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// kill ends every process of the run and waits (bounded) until they are
// gone.
func (t *tree) kill() {
	killGroup(t.pid)
	if t.cg == "" {
		reapOrphans()
		return
	}
	if os.WriteFile(filepath.Join(t.cg, "cgroup.kill"), []byte("1"), 0) != nil {
		// Before Linux 5.14 there is no cgroup.kill: kill each member.
		for _, pid := range cgroupPids(t.cg) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(waitDelay)
	for len(cgroupPids(t.cg)) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if subreaping.Load() {
		reapOrphans()
	}
}

// release removes the run's cgroup (empty once kill returned).
func (t *tree) release() {
	started.Delete(t.pid)
	if t.cg == "" {
		return
	}
	deadline := time.Now().Add(waitDelay)
	for os.Remove(t.cg) != nil && time.Now().Before(deadline) {
		for _, pid := range cgroupPids(t.cg) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(time.Millisecond)
	}
}

func cgroupPids(dir string) []int {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// reapOrphans kills and reaps the processes re-parented to this (subreaper)
// process: children it did not start itself are what a command left
// behind. A child still in the sidecar's own process group was started by
// other code of the sidecar (commands run here get their own group) and is
// left alone. Their own children are re-parented in turn, so it sweeps until
// none is left (bounded).
func reapOrphans() {
	startMu.Lock()
	defer startMu.Unlock()
	self := os.Getpid()
	for range 16 {
		orphans := 0
		for _, pid := range childrenOf(self) {
			if _, ours := started.Load(pid); ours || inOurGroup(pid) {
				continue
			}
			orphans++
			syscall.Kill(pid, syscall.SIGKILL)
			reap(pid)
		}
		if orphans == 0 {
			return
		}
	}
}

func reap(pid int) {
	deadline := time.Now().Add(waitDelay)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if got == pid || errors.Is(err, syscall.ECHILD) || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// childrenOf lists the pids whose parent is ppid (this process): from each
// thread's children list where the kernel has them (CONFIG_PROC_CHILDREN),
// a few small reads, else by scanning every /proc/PID/stat.
func childrenOf(ppid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", ppid))
	if len(tasks) > 0 {
		var out []int
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			for s := range strings.FieldsSeq(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil {
					out = append(out, pid)
				}
			}
		}
		return out
	}
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := parentOf(pid); ok && p == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// parentOf reads the parent pid from /proc/PID/stat.
func parentOf(pid int) (int, bool) {
	f := statFields(pid)
	if len(f) < 3 {
		return 0, false
	}
	p, err := strconv.Atoi(f[1])
	return p, err == nil
}

// inOurGroup says whether pid is in this process's process group.
func inOurGroup(pid int) bool {
	f := statFields(pid)
	return len(f) >= 3 && f[2] == strconv.Itoa(syscall.Getpgrp())
}

// statFields are the fields of /proc/PID/stat after the command name (in
// parentheses, which may hold spaces): state, ppid, pgrp, ...
func statFields(pid int) []string {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}
