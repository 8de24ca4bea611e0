package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// The sidecar's real-time priority (realtime_priority): on a host whose
// CPUs are all busy (a database ending a hundred backends on a shutdown),
// a woken sidecar of normal priority waits behind them on the run queue,
// milliseconds before its report leaves. Under SCHED_FIFO it runs the
// moment its event arrives. Every thread of the process gets the policy
// (the kernel keeps one per thread; threads the runtime starts later copy
// the thread that starts them); the commands the sidecar starts (exec
// checks) do not: they are started from a thread that is back at the
// normal policy for the length of the fork.

// MaxRealtimePriority is SCHED_FIFO's highest priority on Linux.
const MaxRealtimePriority = 99

// schedState is the process's scheduling as applied: one per process, as
// the policy is.
var schedState struct {
	mu   sync.RWMutex // held for writing while threads change policy; for reading around a fork
	want int          // realtime_priority asked for; 0: normal
	have int          // the SCHED_FIFO priority every thread has; 0: normal
	err  error        // why want is not had
}

// SchedStatus is the process's scheduling in /status.
type SchedStatus struct {
	Policy   string `json:"policy"`             // fifo | normal
	Priority int    `json:"priority,omitempty"` // with fifo
	Want     int    `json:"want,omitempty"`     // realtime_priority, when not had
	Error    string `json:"error,omitempty"`    // why not
}

// realtimeInForce is the SCHED_FIFO priority every thread has; 0: normal.
func realtimeInForce() int {
	schedState.mu.RLock()
	defer schedState.mu.RUnlock()
	return schedState.have
}

func schedStatus() *SchedStatus {
	schedState.mu.RLock()
	defer schedState.mu.RUnlock()
	if schedState.want == 0 && schedState.have == 0 {
		return nil
	}
	st := &SchedStatus{Policy: "normal"}
	if schedState.have != 0 {
		st.Policy, st.Priority = "fifo", schedState.have
	}
	if schedState.want != schedState.have {
		st.Want = schedState.want
	}
	if schedState.err != nil {
		st.Error = schedState.err.Error()
	}
	return st
}

// setRealtime gives every thread of the process SCHED_FIFO at prio, or
// the normal policy for prio 0. On an error every thread is put back to
// the normal policy, so the process is never half real-time; the error
// says what the kernel refused. It returns whether anything changed.
func setRealtime(prio int) (changed bool, err error) {
	schedState.mu.Lock()
	defer schedState.mu.Unlock()
	if prio == schedState.want && prio == schedState.have {
		return false, nil
	}
	schedState.want = prio
	err = eachThread(prio)
	if err != nil && prio != 0 {
		if err0 := eachThread(0); err0 != nil {
			err = errors.Join(err, fmt.Errorf("and back to the normal policy: %w", err0))
		}
		schedState.have = 0
		err = fmt.Errorf("realtime_priority %d: %w (it needs CAP_SYS_NICE and, where the cpu controller of cgroup v1 is mounted, a cpu.rt_runtime_us budget for the sidecar's cgroup)", prio, err)
	} else if err == nil {
		schedState.have = prio
	}
	schedState.err = err
	return true, err
}

// eachThread sets the policy of every thread of the process, again until
// a pass finds none it had not set: a thread started during a pass by a
// thread not yet set would otherwise keep the old policy.
func eachThread(prio int) error {
	done := map[int]bool{}
	for range 100 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := setPolicy(tid, prio); err != nil && !errors.Is(err, unix.ESRCH) { // ESRCH: it exited
				return err
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			return nil
		}
	}
	return errors.New("threads kept starting while their policy was set")
}

// setPolicy sets one thread (0: the caller's) to SCHED_FIFO at prio, or
// to SCHED_OTHER with the nice value it had for prio 0.
func setPolicy(tid, prio int) error {
	attr, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return err
	}
	nice := attr.Nice
	attr = &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL, Nice: nice}
	if prio != 0 {
		attr.Policy, attr.Priority = unix.SCHED_FIFO, uint32(prio)
	}
	return unix.SchedSetAttr(tid, attr, 0)
}

// startNormal starts cmd at the normal policy: under realtime_priority the
// thread that forks it leaves SCHED_FIFO for the length of the fork, so a
// check's command (a shell script that loops) cannot hold a CPU at
// real-time priority.
func startNormal(cmd *exec.Cmd) error {
	schedState.mu.RLock()
	defer schedState.mu.RUnlock()
	prio := schedState.have
	if prio == 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	if err := setPolicy(0, 0); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("leaving real-time priority to start %s: %w", cmd.Path, err)
	}
	err := cmd.Start()
	if setPolicy(0, prio) != nil {
		// This thread stays at the normal policy: the runtime must not
		// hand it to another goroutine.
		return err
	}
	runtime.UnlockOSThread()
	return err
}

// combinedOutput is cmd.CombinedOutput, started by startNormal.
func combinedOutput(cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := startNormal(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	return out.Bytes(), err
}
