package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// DefaultOutputLimit caps the output kept from a command.
const DefaultOutputLimit = 4096

// waitDelay bounds how long a run may wait once its processes have been
// killed (for them to go, for the output pipe to end).
const waitDelay = 500 * time.Millisecond

// outputGrace bounds how long output is still read once the command has
// exited and the rest of its tree has been killed. The pipe ends as soon as
// the last holder is gone, which is at once: this only bounds a holder the
// kill could not reach, and is generous so that a loaded machine does not
// lose output already written.
const outputGrace = waitDelay

// cmdResult is what one command run produced.
type cmdResult struct {
	out       []byte // stdout then stderr interleaved, at most limit bytes
	truncated bool
	exitCode  int // -1 when killed by a signal
}

// runCommand runs argv (no shell) and keeps at most limit bytes of its
// combined output. The result is the command's own exit: a background child
// that still holds the output pipe does not hold the run, and nothing the
// command started outlives the run, setsid or not: each run has its own
// cgroup that is killed whole at the end (see tree). An error means it could
// not be started or did not finish in time; a non-zero exit is not an error
// here, the caller judges the exit code.
func runCommand(ctx context.Context, argv []string, limit int) (cmdResult, error) {
	if limit <= 0 {
		limit = DefaultOutputLimit
	}
	res := cmdResult{exitCode: -1}
	pr, pw, err := os.Pipe()
	if err != nil {
		return res, fmt.Errorf("%s: %w", argv[0], err)
	}
	defer pr.Close()
	// The command writes to the pipe itself (an *os.File), so Wait returns
	// when the command exits, not when every holder of the pipe has closed it.
	cmd, t, err := startInTree(argv, pw)
	pw.Close()
	if err != nil {
		return res, fmt.Errorf("%s: %w", argv[0], err)
	}
	defer t.release()

	out := &capWriter{limit: limit}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(out, pr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var waitErr error
	select {
	case waitErr = <-exited:
	case <-ctx.Done():
		t.kill()
		waitErr = <-exited
	}
	t.kill()
	select {
	case <-copied:
	case <-time.After(outputGrace):
		pr.Close() // ends the copy
		<-copied
	}

	res.out, res.truncated = out.buf, out.dropped > 0
	if cmd.ProcessState != nil {
		res.exitCode = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("%s: %w", argv[0], ctx.Err())
	case waitErr == nil, errors.As(waitErr, &exitErr):
		return res, nil
	default:
		return res, fmt.Errorf("%s: %w", argv[0], waitErr)
	}
}

// killGroup kills the process group led by pid. The group id is the
// leader's pid; members still hold it, so it cannot have been reused while
// any of them lives.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
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
