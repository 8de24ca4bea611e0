package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// rtRoot is the cpu controller of cgroup v1 where the kernel does real-time
// group scheduling: there a SCHED_FIFO thread needs its cgroup to have a
// cpu.rt_runtime_us budget, and systemd's scopes have none (0). Where it is
// not mounted (cgroup v2 only), the global budget is every process's.
const rtRoot = "/sys/fs/cgroup/cpu"

// RealtimeCgroup makes, where real-time group scheduling is on, a cgroup v1
// cpu cgroup named name with a budget of runtimeUS µs of real-time CPU per
// second, and returns the argv prefix that runs a command inside it: a
// shell that moves itself in, then runs exec of the command, so the
// command can take SCHED_FIFO from its first instruction. Where no budget
// is needed the prefix is empty. remove takes the cgroup away once its
// processes have exited. Root only.
func RealtimeCgroup(name string, runtimeUS int) (prefix []string, remove func(), err error) {
	if _, err := os.Stat(filepath.Join(rtRoot, "cpu.rt_runtime_us")); err != nil {
		return nil, func() {}, nil
	}
	dir := filepath.Join(rtRoot, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, nil, err
	}
	remove = func() {
		for range 500 { // its processes may still be exiting
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cpu.rt_runtime_us"), []byte(strconv.Itoa(runtimeUS)), 0); err != nil {
		remove()
		return nil, nil, fmt.Errorf("real-time budget %d µs for %s: %w", runtimeUS, dir, err)
	}
	return []string{"/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir}, remove, nil
}
