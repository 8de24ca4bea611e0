package sidecar

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
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
		// The shell exits at once but leaves a grandchild holding the output pipe.
		{"background child", "sleep 30 & echo $!", false, "timed out after 200ms"},
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
			eventually(t, 2*time.Second, "grandchild "+strconv.Itoa(pid)+" gone", func() bool { return !alive(pid) })
		})
	}
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
