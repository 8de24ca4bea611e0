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
	remove = func() { RemoveCgroup(dir, 5*time.Second) }
	if err := os.WriteFile(filepath.Join(dir, "cpu.rt_runtime_us"), []byte(strconv.Itoa(runtimeUS)), 0); err != nil {
		remove()
		return nil, nil, fmt.Errorf("real-time budget %d µs for %s: %w", runtimeUS, dir, err)
	}
	return []string{"/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir}, remove, nil
}

// RemoveCgroup removes the cgroup dir, trying again for up to within while
// its killed processes are still exiting (rmdir fails with EBUSY until
// they are gone). A cgroup already gone is removed.
func RemoveCgroup(dir string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
