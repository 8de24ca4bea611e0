package sidecar

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// DefaultOutputLimit caps the output kept from a command.
const DefaultOutputLimit = 4096

// waitDelay bounds how long Wait may take once the group has been killed.
const waitDelay = 500 * time.Millisecond

// cmdResult is what one command run produced.
type cmdResult struct {
	out       []byte // stdout then stderr interleaved, at most limit bytes
	truncated bool
	exitCode  int // -1 when killed by a signal
}

// runCommand runs argv (no shell) in its own process group, keeps at most
// limit bytes of its combined output, and on the context's end kills the
// whole group, so nothing the command started outlives the check. An error
// means it could not be started or did not finish; a non-zero exit is not an
// error here, the caller judges the exit code.
func runCommand(ctx context.Context, argv []string, limit int) (cmdResult, error) {
	if limit <= 0 {
		limit = DefaultOutputLimit
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out := &capWriter{limit: limit}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd) }
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	// A command that exits but leaves a background child in its group must not
	// leave it running either. The group id is the leader's pid; the members
	// still hold it, so it cannot have been reused while any of them lives.
	if cmd.Process != nil {
		_ = killGroup(cmd)
	}
	res := cmdResult{out: out.buf, truncated: out.dropped > 0, exitCode: -1}
	if cmd.ProcessState != nil {
		res.exitCode = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("%s: %w", argv[0], ctx.Err())
	case err == nil, errors.As(err, &exitErr):
		return res, nil
	default:
		return res, fmt.Errorf("%s: %w", argv[0], err)
	}
}

func killGroup(cmd *exec.Cmd) error {
	err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// capWriter keeps the first limit bytes and drains the rest, so a chatty
// child never blocks on a full pipe.
type capWriter struct {
	limit   int
	buf     []byte
	dropped int
}

func (w *capWriter) Write(p []byte) (int, error) {
	room := w.limit - len(w.buf)
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		w.buf = append(w.buf, p[:room]...)
	}
	w.dropped += len(p) - max(room, 0)
	return len(p), nil
}

// commandFailed describes a non-zero exit with the start of its output.
func commandFailed(argv []string, r cmdResult) error {
	return fmt.Errorf("%s exited %d: %s", argv[0], r.exitCode, firstLine(r.out))
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}
