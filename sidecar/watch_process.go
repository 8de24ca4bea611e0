package sidecar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pidfdOpen is unix.PidfdOpen; tests swap in a kernel without pidfds.
var pidfdOpen = unix.PidfdOpen

func watchProcess(ctx context.Context, c *Check, wake func()) error {
	return watchPID(ctx, c, &c.Process.procTarget, wake)
}

// watchDaemon watches a daemon's pid and, when socket is set, holds a
// connection to its socket: either one ending wakes the check.
func watchDaemon(ctx context.Context, c *Check, t *procTarget, socket string, wake func()) error {
	if socket == "" {
		return watchPID(ctx, c, t, wake)
	}
	return watchAll(ctx,
		func(ctx context.Context) error { return watchPID(ctx, c, t, wake) },
		func(ctx context.Context) error { return holdConn(ctx, c, wake, unixDialer(socket), nil) },
	)
}

// watchAll runs several sources of one check; the first that cannot start
// stops the others and its error is returned.
func watchAll(ctx context.Context, sources ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(sources))
	for _, src := range sources {
		wg.Go(func() {
			if err := src(ctx); err != nil && ctx.Err() == nil {
				errs <- err
				cancel()
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return ctx.Err()
	}
}

// watchPID follows the daemon through a pidfd: the kernel makes it readable
// the moment the process exits, whoever its parent is. After an exit the
// daemon is found again (a supervisor restarts it with a new pid) and the
// new process is watched; finding it wakes the check too, so it comes back
// as fast as it went.
func watchPID(ctx context.Context, c *Check, t *procTarget, wake func()) error {
	// A pidfd names a pid of our own PID namespace: procfs must be of the
	// same one (its "self" is us), or pids read there would name others.
	if self, err := os.Readlink(filepath.Join(t.Proc, "self")); err != nil || self != strconv.Itoa(os.Getpid()) {
		return fmt.Errorf("%w: %s is not the procfs of this PID namespace (Kubernetes: hostPID)", errCannotWatch, t.Proc)
	}
	bo := watchBackoff(c, scanBackoff)
	last, rechecked := 0, false
	for {
		pid, err := t.resolve(ctx, last)
		if err != nil {
			if rechecked { // the check's daemon gone too, as the watch let go
				wake()
			}
			rechecked = false
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		fd, err := pidfdOpen(pid, unix.PIDFD_NONBLOCK)
		if errors.Is(err, unix.ESRCH) { // gone between finding and opening: the check decides, and the watch finds it again
			wake()
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: pidfd_open: %w", errCannotWatch, err)
		}
		// The pid may have been reused between finding and opening; the fd
		// now pins this process, so a second look is conclusive.
		if again, err := t.resolve(ctx, pid); err != nil || again != pid {
			unix.Close(fd) // it exited (or changed) while we looked: the check decides
			wake()
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		traced(c, "pidfd")
		rechecked = false
		if int64(pid) != t.found.Load() {
			wake() // not where the check last found the daemon: it may pass again
		}
		last = pid
		bo.reset()
		drain(t.recheck)
		t.watched.Store(int64(pid))
		recheck, err := waitPidfdOr(ctx, fd, t.recheck)
		t.watched.Store(0)
		if err != nil {
			return err
		}
		if recheck {
			// The check has just run and found the daemon elsewhere, or
			// nowhere: the watch takes the check's pid (or scans), without
			// waking it again, so that two processes that both match cannot
			// make the two chase each other.
			traced(c, "recheck")
			last, rechecked = int(t.found.Load()), true
			continue
		}
		wake()
	}
}

// waitPidfdOr is waitPidfd that also ends, true, on a token of recheck.
func waitPidfdOr(ctx context.Context, fd int, recheck <-chan struct{}) (bool, error) {
	wctx, rechecked, cancel := untilToken(ctx, recheck)
	defer cancel()
	err := waitPidfd(wctx, fd)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if rechecked() {
		return true, nil
	}
	return false, err
}

// waitPidfd blocks until the process of fd exits (nil) or ctx ends; it
// closes fd.
func waitPidfd(ctx context.Context, fd int) error {
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	defer stop()
	err = rc.Read(func(fd uintptr) bool {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ := unix.Poll(p, 0)
		return n > 0
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil { // not pollable here: waiting again would spin
		return fmt.Errorf("%w: waiting on a pidfd: %w", errCannotWatch, err)
	}
	return nil
}
