package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

func TestExecCheck(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		healthy bool
		why     string
	}{
		{"exit 0", `{command: ["true"]}`, true, "exit 0"},
		{"exit 1", `{command: ["false"]}`, false, "false exited 1, want 0"},
		{"expected exit code", `{command: ["false"], exit_code: 1}`, true, "exit 1"},
		{"output matches", `{command: [echo, "state: ready"], expect_output: 'state: (ready|ok)'}`, true, "exit 0"},
		{"output does not match", `{command: [echo, "state: starting"], expect_output: 'state: ready'}`, false, `output does not match "state: ready"`},
		{"stderr is output too", `{command: [sh, -c, "echo ready >&2"], expect_output: ready}`, true, "exit 0"},
		{"no shell: argv is not split", `{command: ["echo ready"]}`, false, "executable file not found"},
		{"missing program", `{command: [/nonexistent/probe]}`, false, "no such file or directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, newCheck(t, "exec: "+tc.spec), tc.healthy, tc.why)
		})
	}
}

func TestExecOutputCap(t *testing.T) {
	c := newCheck(t, `exec: {command: [sh, -c, "head -c 1000000 /dev/zero | tr '\\0' x; echo done"], output_limit: 100}`)
	r := expect(t, c, true, "exit 0")
	if len(r.Output) != 100 || strings.Trim(r.Output, "x") != "" {
		t.Errorf("output %d bytes %q, want 100 x", len(r.Output), r.Output[:min(len(r.Output), 20)])
	}
}

// A command that hangs past its timeout is killed with every process it
// started, and the check returns soon after the timeout.
func TestExecTimeoutKillsGroup(t *testing.T) {
	tests := []struct {
		name, script string
		healthy      bool
		why          string
	}{
		// The shell waits on a grandchild that would sleep far past the timeout.
		{"hang", "sleep 30 & echo $!; wait", false, "timed out after 200ms"},
		// The shell exits at once but leaves a grandchild holding the output
		// pipe: the run is judged by the shell's exit, the child still dies.
		{"background child", "sleep 30 & echo $!", true, "exit 0"},
		// The grandchild has let go of the pipe; the run passes, the child still dies.
		{"detached child", "sleep 30 >/dev/null 2>&1 & echo $!", true, "exit 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCheck(t, "exec: {command: [sh, -c, '"+tc.script+"']}\ninterval: 1s\ntimeout: 200ms")
			start := time.Now()
			r := expect(t, c, tc.healthy, tc.why)
			if took := time.Since(start); took > 200*time.Millisecond+waitDelay+200*time.Millisecond {
				t.Errorf("took %s", took)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(r.Output))
			if err != nil {
				t.Fatalf("no grandchild pid in output %q", r.Output)
			}
			testutil.WaitFor(t, 2*time.Second, "grandchild "+strconv.Itoa(pid)+" gone", func() bool { return !alive(pid) })
		})
	}
}

// A command is judged by its own exit, and nothing it starts outlives its run:
// not a child in its process group holding the output pipe, not a child that
// left the group with setsid, nor that child's children. Both ways of
// killing the tree are tried: a cgroup per run, and (where there is no
// writable cgroup v2) the sidecar as child subreaper.
func TestExecLeavesNothing(t *testing.T) {
	for _, mode := range []string{"cgroup", "subreaper"} {
		t.Run(mode, func(t *testing.T) {
			testutil.Need(t, "setsid")
			if mode == "cgroup" && cgroupParent() == "" {
				testutil.Missing(t, "no cgroup v2 here")
			}
			was := cgroupsOff.Load()
			cgroupsOff.Store(mode == "subreaper")
			t.Cleanup(func() { cgroupsOff.Store(was) })
			n := 0
			tests := []struct {
				name, script string // SLEEP is replaced by a sleep with a unique argument
				exitCode     int
				healthy      bool
				why          string
			}{
				{"background child holds stdout", "SLEEP & echo started", 0, true, "exit 0"},
				{"setsid child", "setsid SLEEP >/dev/null 2>&1 & echo started", 0, true, "exit 0"},
				{"setsid child holds stdout", "setsid SLEEP & echo started; exit 3", 3, true, "exit 3"},
				{"children of a setsid child", `setsid sh -c "SLEEP & SLEEP" & echo started`, 0, true, "exit 0"},
				{"own failure with a child left", "SLEEP & exit 1", 0, false, "sh exited 1, want 0"},
			}
			// A child other code of the sidecar started and keeps is not a
			// command's leftover: the runs leave it alone.
			keeper := exec.Command("sleep", fmt.Sprintf("999.%d", os.Getpid()))
			if err := keeper.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { keeper.Process.Kill(); keeper.Wait() })
			t.Cleanup(func() {
				if !alive(keeper.Process.Pid) {
					t.Error("the sidecar's own child was killed by a run")
				}
			})
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					n++
					marker := fmt.Sprintf("%d.%d", 1000+n, os.Getpid())
					script := strings.ReplaceAll(tc.script, "SLEEP", "sleep "+marker)
					c := newCheck(t, fmt.Sprintf("exec: {command: [sh, -c, '%s'], exit_code: %d}\ninterval: 10s\ntimeout: 5s", script, tc.exitCode))
					start := time.Now()
					expect(t, c, tc.healthy, tc.why)
					// The children sleep for ever: waiting for them would take
					// the whole 5 s timeout.
					if took := time.Since(start); took > 4*time.Second {
						t.Errorf("run took %s: it waited for a child", took)
					}
					if left := processesWith("sleep\x00" + marker); len(left) > 0 {
						t.Errorf("left running after the run: %v", left)
					}
					if mode == "cgroup" {
						if cgroupsOff.Load() {
							t.Fatal("cgroups could not be used: the run fell back to the subreaper")
						}
						runs, _ := filepath.Glob(filepath.Join(cgroupParent(), fmt.Sprintf("hs-exec-%d-*", os.Getpid())))
						if len(runs) > 0 {
							t.Errorf("cgroups left: %v", runs)
						}
					}
				})
			}
		})
	}
}

// processesWith scans /proc for live processes whose command line contains
// s (zombies have none).
func processesWith(s string) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, d := range dirs {
		cmdline, err := os.ReadFile(d + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, filepath.Base(d)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}

// alive says whether pid is a live process: gone or a zombie waiting for its
// (new) parent to reap it both count as dead.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// The cost of a run's own cgroup, or of the subreaper's /proc sweep, beside
// running the same command with os/exec alone.
func BenchmarkExecRun(b *testing.B) {
	argv := []string{"true"}
	b.Run("os-exec-baseline", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command(argv[0]).Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, mode := range []string{"cgroup", "subreaper"} {
		b.Run(mode, func(b *testing.B) {
			if mode == "cgroup" && cgroupParent() == "" {
				b.Skip("no cgroup v2")
			}
			was := cgroupsOff.Load()
			cgroupsOff.Store(mode == "subreaper")
			defer cgroupsOff.Store(was)
			for b.Loop() {
				if r, err := runCommand(context.Background(), argv, 0); err != nil || r.exitCode != 0 {
					b.Fatal(r.exitCode, err)
				}
			}
		})
	}
}
