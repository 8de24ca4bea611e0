package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// watchCgroup wakes the check when the kernel rewrites cgroup.events
// (populated changed) or memory.events (an OOM kill, among others), and on
// cgroup v1's OOM notification of memory_v1. A cgroup removed and created
// again (same path) is followed.
func watchCgroup(ctx context.Context, c *Check, wake func()) error {
	s := c.Cgroup
	if s.MemoryV1 == "" {
		return watchCgroupV2(ctx, c, wake)
	}
	return watchAll(ctx,
		func(ctx context.Context) error { return watchCgroupV2(ctx, c, wake) },
		func(ctx context.Context) error { return watchOOMv1(ctx, c, wake) },
	)
}

func watchCgroupV2(ctx context.Context, c *Check, wake func()) error {
	open := func() (*os.File, error) { return inotifyCgroup(c.Cgroup.Path) }
	return watchInotify(ctx, c, "inotify", open, "", wake)
}

// watchInotify wakes the check on the events of the inotify descriptor
// that open makes (only those of the entry name, if given) until the
// watched file or folder goes away; then it opens one again (with backoff)
// once it is back, and wakes the check on each of those changes too. what
// names the source for traced.
func watchInotify(ctx context.Context, c *Check, what string, open func() (*os.File, error), name string, wake func()) error {
	bo := watchBackoff(c, connBackoff)
	first := true
	for {
		f, err := open()
		if err != nil {
			if isCannotWatch(err) {
				return err
			}
			// Gone (a pod's cgroup deleted, a data directory moved): it may come back.
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		traced(c, what)
		if !first {
			wake() // back: the check may pass again
		}
		first = false
		bo.reset()
		err = readInotify(ctx, f, name, wake)
		f.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("%w: inotify: %w", errCannotWatch, err)
		}
		wake() // the watch ended: what it watched was removed
	}
}

// newInotify opens a non-blocking inotify descriptor, as a file for
// readFD and as the fd to add watches to.
func newInotify() (*os.File, int, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: inotify_init: %w", errCannotWatch, err)
	}
	return os.NewFile(uintptr(fd), "inotify"), fd, nil
}

// inotifyCgroup opens an inotify descriptor watching the cgroup's files.
func inotifyCgroup(dir string) (*os.File, error) {
	f, fd, err := newInotify()
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "cgroup.events"), unix.IN_MODIFY); err != nil {
		f.Close()
		if _, derr := os.Stat(dir); derr == nil {
			return nil, fmt.Errorf("%w: %s/cgroup.events: %w (not a cgroup v2 directory?)", errCannotWatch, dir, err)
		}
		return nil, err
	}
	// memory.events exists only where v2 has the memory controller.
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(dir, "memory.events"), unix.IN_MODIFY); err != nil && !errors.Is(err, unix.ENOENT) {
		f.Close()
		return nil, fmt.Errorf("%w: %s/memory.events: %w", errCannotWatch, dir, err)
	}
	return f, nil
}

// readInotify wakes on every event until a watched file or folder goes
// away (IN_IGNORED: the cgroup, or the data directory, was removed); nil
// then. With a name, only the events of that entry of a watched folder
// wake (and a queue overflow, which may have lost one).
func readInotify(ctx context.Context, f *os.File, name string, wake func()) error {
	buf := make([]byte, 4096)
	for {
		n, err := readFD(ctx, f, buf)
		if err != nil {
			return err
		}
		gone, woke := false, false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(&buf[off]))
			entry := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if ev.Mask&unix.IN_IGNORED != 0 {
				gone = true
			} else if name == "" || ev.Mask&unix.IN_Q_OVERFLOW != 0 || string(bytes.TrimRight(entry, "\x00")) == name {
				woke = true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		if gone {
			return nil
		}
		if woke {
			wake()
		}
	}
}

// watchOOMv1 registers an eventfd for memory.oom_control with cgroup v1's
// cgroup.event_control: the kernel signals it on every OOM in the cgroup,
// and when the cgroup is removed.
func watchOOMv1(ctx context.Context, c *Check, wake func()) error {
	dir := c.Cgroup.MemoryV1
	bo := watchBackoff(c, connBackoff)
	first := true
	for {
		f, err := oomEventfd(dir)
		if err != nil {
			if isCannotWatch(err) {
				return err
			}
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		traced(c, "oom eventfd")
		if !first {
			wake()
		}
		first = false
		bo.reset()
		for {
			var buf [8]byte
			kills := oomKillsV1(dir)
			if _, err := readFD(ctx, f, buf[:]); err != nil {
				break
			}
			wake()
			if _, err := os.Stat(dir); err != nil {
				break // the removal signal: register again once it is back
			}
			// The notification comes as the OOM starts; the kill (and its
			// count, which the check reads) follows a moment later.
			if awaitOOMKill(ctx, dir, kills) {
				wake()
			}
		}
		f.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func oomEventfd(dir string) (*os.File, error) {
	oc, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		if _, derr := os.Stat(dir); derr == nil {
			return nil, fmt.Errorf("%w: %w (not a cgroup v1 memory directory?)", errCannotWatch, err)
		}
		return nil, err
	}
	defer oc.Close()
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("%w: eventfd: %w", errCannotWatch, err)
	}
	f := os.NewFile(uintptr(efd), "eventfd")
	line := fmt.Sprintf("%d %d", efd, oc.Fd())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(line), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: cgroup.event_control: %w", errCannotWatch, err)
	}
	return f, nil
}

func oomKillsV1(dir string) uint64 {
	ev, _ := readKeyed(filepath.Join(dir, "memory.oom_control"))
	return ev["oom_kill"]
}

// awaitOOMKill waits for the cgroup's oom_kill count to pass from; true
// when it did. The OOM killer may first reclaim for a while on a busy node;
// an OOM that ends without a kill gives up after a few seconds.
func awaitOOMKill(ctx context.Context, dir string, from uint64) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if oomKillsV1(dir) > from {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}
