package sidecar

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"
	"unsafe"
)

// watchFunc is a kind's event source (Contract 8). It returns a non-nil
// error promptly (within the check's timeout) when the source cannot start;
// the check is then polled only. Otherwise it blocks until ctx is done,
// calling wake whenever the checked thing may have changed, and
// re-establishes itself (with backoff) after the watched thing went away. It
// returns ctx.Err() or nil when ctx ends. An event never decides: wake only
// runs the check at once.
type watchFunc func(ctx context.Context, c *Check, wake func()) error

// watchers maps a kind to its event source; kinds not listed are polled only.
var watchers = map[string]watchFunc{
	"process":  watchProcess,
	"ovs":      watchOVS,
	"crio":     watchCRIO,
	"cgroup":   watchCgroup,
	"http":     watchHTTP,
	"tcp":      watchTCP,
	"postgres": watchPostgres,
	"mysql":    watchMySQL,
	"redis":    watchRedis,
	"grpc":     watchGRPC,
	"nftables": watchNFTables,
	"iptables": watchIPTables,
	"vm":       watchVM,
	"pods":     watchPods,
}

// Values of a check's watch field.
const (
	watchAuto = "auto"
	watchOn   = "on"
	watchOff  = "off"
)

func (c *Check) compileWatch() error {
	_, has := watchers[c.kind]
	switch c.Watch {
	case "", watchAuto:
		c.watch = has
	case watchOn:
		if !has {
			return fmt.Errorf("watch: on, but kind %s has no event source (kinds with one: %s)", c.kind, keysJoined(watchers))
		}
		c.watch = true
	case watchOff:
		c.watch = false
	default:
		return fmt.Errorf("watch %q: use auto, on or off", c.Watch)
	}
	c.passed = make(chan struct{}, 1)
	return nil
}

func keysJoined[V any](m map[string]V) string {
	s := ""
	for i, k := range keys(m) {
		if i > 0 {
			s += ", "
		}
		s += k
	}
	return s
}

// Watch states shown in /status.
const (
	watchStateOff      = "off"      // polling only, as configured (or the kind has no source)
	watchStateEvents   = "events"   // the event source runs beside polling
	watchStateFallback = "fallback" // the source could not start: polling only
)

// retryPause is the pause of a watcher between attempts to re-establish
// itself: from lo doubling to hi, with jitter, reset after a success. A
// passing run of the check ends the pause at once: the thing is back, and
// a fault soon after must not find the source still waiting.
type retryPause struct {
	lo, hi, cur time.Duration
	passed      <-chan struct{}
}

func newRetryPause(lo, hi time.Duration) *retryPause { return &retryPause{lo: lo, hi: hi} }

// wait sleeps the next pause or until ctx ends; false when ctx ended.
func (b *retryPause) wait(ctx context.Context) bool {
	if b.cur == 0 {
		b.cur = b.lo
	} else {
		b.cur = min(2*b.cur, b.hi)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-b.passed:
		return true
	}
}

func (b *retryPause) reset() { b.cur = 0 }

// watchBackoff is the backoff of watchers re-establishing themselves:
// fast at first, since a supervisor may bring the thing back within
// milliseconds, and at most hi or the check's own period. Sources whose
// attempt is cheap (a connection refused) use a short hi, so that the watch
// is back soon after its target; those that scan (procfs) a longer one.
func watchBackoff(c *Check, hi time.Duration) *retryPause {
	b := newRetryPause(5*time.Millisecond, min(max(c.interval, 5*time.Millisecond), hi))
	b.passed = c.passed
	return b
}

// Backoff ceilings of the sources.
const (
	connBackoff = 100 * time.Millisecond // held and parked connections, inotify, eventfd
	scanBackoff = time.Second            // finding a process again in procfs
)

// readFD blocks in Go's poller until f (a non-blocking descriptor: pidfd,
// inotify, eventfd) is readable and reads from it into buf, or until ctx
// ends. n is 0 for a pidfd, which is readable but has nothing to read.
func readFD(ctx context.Context, f *os.File, buf []byte) (int, error) {
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	defer stop()
	n, err := f.Read(buf)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return n, err
}

// signal leaves a token in a one-slot channel, unless one is there already.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// drain takes the token of a one-slot channel, if there is one.
func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

// untilToken returns a context that ends with ctx, or as soon as ch yields
// a token (which it takes), and says afterwards whether the token ended it.
func untilToken(ctx context.Context, ch <-chan struct{}) (_ context.Context, took func() bool, cancel context.CancelFunc) {
	tctx, cancel := context.WithCancel(ctx)
	var got atomic.Bool
	go func() {
		select {
		case <-ch:
			got.Store(true)
			cancel()
		case <-tctx.Done():
		}
	}()
	return tctx, got.Load, cancel
}

// errCannotWatch marks the errors of a source that cannot start here.
var errCannotWatch = errors.New("event source cannot start")

func isCannotWatch(err error) bool { return errors.Is(err, errCannotWatch) }

func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }

// traceWatch, when set (by tests), is told each time a source is
// established, so a test can wait for it instead of sleeping.
var traceWatch func(c *Check, what string)

func traced(c *Check, what string) {
	if traceWatch != nil {
		traceWatch(c, what)
	}
}
