package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/report"
)

// runner runs one check on its own timer and keeps its debounced state.
type runner struct {
	check    *Check
	m        *metrics
	log      *slog.Logger
	onChange func() // called, outside the lock, on every debounced change

	wakes chan struct{} // one slot: events that arrive during a run coalesce into one more run

	mu         sync.Mutex
	counter    *hysteresis.Counter
	last       Result
	runs       uint64
	failures   uint64
	watchState string // watchStateOff, watchStateEvents or watchStateFallback
	watchErr   string // why the event source fell back to polling
}

func newRunner(c *Check, m *metrics, log *slog.Logger, onChange func()) *runner {
	return &runner{check: c, m: m, log: log, onChange: onChange, counter: hysteresis.New(c.fall, c.rise),
		wakes: make(chan struct{}, 1), watchState: watchStateOff}
}

// inherit carries the state of the same check across a reload, so a check
// that was down does not report up while its new counter warms up.
func (r *runner) inherit(old *runner) {
	old.mu.Lock()
	defer old.mu.Unlock()
	r.last, r.runs, r.failures = old.last, old.runs, old.failures
	switch old.counter.State() {
	case hysteresis.Down:
		for range r.counter.Fall {
			r.counter.Observe(false)
		}
	case hysteresis.Up:
		r.counter.Observe(true)
	}
}

// loop runs the check every interval after a random first delay, so polled
// checks started together do not run in lock step, and at once on an event
// of the check's source (watch.go). The safety polls of watched checks fall
// on the process's ticks instead (untilTick). Runs are sequential: at most one is in flight
// and one pending; a slow run makes the ticker drop ticks and events
// coalesce, nothing piles up. The event source stops with the loop.
func (r *runner) loop(ctx context.Context) {
	if !r.check.watch {
		r.m.checkWatched.WithLabelValues(r.check.Name).Set(0) // also after a reload turned it off
	} else {
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { r.watch(wctx) })
		defer wg.Wait()
		defer cancel()
	}
	period := r.check.interval
	start := rand.N(period)
	if r.check.watch {
		start = untilTick(period, time.Now())
	}
	first := time.NewTimer(start)
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	case <-r.wakes:
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		r.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-r.wakes:
		}
	}
}

// tickOrigin is this process's origin of ticks: the safety polls of watched
// checks and the heartbeat fall on its multiples of their periods, so that,
// with equal periods, they wake an idle process once together rather than
// each at its own moment (an idle Go process's cost is mostly in its
// wakeups: each one keeps the runtime's monitor thread polling for a
// while). Each process draws its own, so sidecars do not push in step.
var tickOrigin = time.Now().Add(-rand.N(time.Hour))

// untilTick is the time from now to the next tick of period after
// tickOrigin.
func untilTick(period time.Duration, now time.Time) time.Duration {
	return period - now.Sub(tickOrigin)%period
}

// wake asks for a run at once; it never blocks.
func (r *runner) wake() {
	select {
	case r.wakes <- struct{}{}:
		r.m.checkWakes.WithLabelValues(r.check.Name).Inc()
	default:
	}
}

// watch runs the check's event source until ctx ends. A source that cannot
// start (or stops on its own) leaves the check polled: said once in the
// log, in /status and in the metrics.
func (r *runner) watch(ctx context.Context) {
	name := r.check.Name
	r.setWatch(watchStateEvents, "")
	r.m.checkWatched.WithLabelValues(name).Set(1)
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("event source panicked: %v", p)
			}
		}()
		return watchers[r.check.kind](ctx, r.check, r.wake)
	}()
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		err = errors.New("event source stopped")
	}
	r.setWatch(watchStateFallback, err.Error())
	r.m.checkWatched.WithLabelValues(name).Set(0)
	r.m.watchFallbacks.WithLabelValues(name).Inc()
	r.log.Warn("event source cannot run: polling only", "check", name, "kind", r.check.kind, "every", r.check.interval, "err", err)
}

func (r *runner) setWatch(state, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchState, r.watchErr = state, why
}

// watchStatus is the event source's state for /status.
func (r *runner) watchStatus() (state, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watchState, r.watchErr
}

// once runs the check one time and records the result.
func (r *runner) once(ctx context.Context) Result {
	res := r.check.Run(ctx)
	if ctx.Err() != nil {
		return res // stopping: a run cut short says nothing about the check
	}
	r.observe(res)
	return res
}

func (r *runner) observe(res Result) {
	name := r.check.Name
	r.mu.Lock()
	prev := r.counter.State()
	state, changed := r.counter.Observe(res.Healthy)
	r.last = res
	r.runs++
	if !res.Healthy {
		r.failures++
	}
	r.mu.Unlock()

	result := "ok"
	if !res.Healthy {
		result = "fail"
	}
	if res.Healthy && r.check.passed != nil {
		signal(r.check.passed) // tell a source in backoff that the thing is back
	}
	r.m.checkRuns.WithLabelValues(name, result).Inc()
	r.m.checkDuration.WithLabelValues(name).Observe(res.Duration.Seconds())
	if !changed {
		return
	}
	up := 0.0
	if state != hysteresis.Down {
		up = 1
	}
	r.m.checkUp.WithLabelValues(name).Set(up)
	r.m.checkTransitions.WithLabelValues(name, state.String()).Inc()
	r.log.Info("check changed", "check", name, "from", prev.String(), "to", state.String(), "why", res.Why())
	r.onChange()
}

// snapshot is the check as reported. An Unknown check (no verdict yet)
// counts as healthy, as the hysteresis counter and the plugin treat it.
func (r *runner) snapshot() (report.Check, hysteresis.State, Result, uint64, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	state := r.counter.State()
	return report.Check{
		Name:       r.check.Name,
		Kind:       r.check.kind,
		Healthy:    state != hysteresis.Down,
		Critical:   r.check.critical,
		ObservedAt: r.last.At.UTC(),
		DurationMS: float64(r.last.Duration.Microseconds()) / 1000,
		Detail:     r.last.Why(),
	}, state, r.last, r.runs, r.failures
}

// CheckAll runs every check of cfg once, at the same time, and returns the
// results in config order. It is the `check` command's engine.
func CheckAll(ctx context.Context, cfg *Config) []Result {
	out := make([]Result, len(cfg.Checks))
	var wg sync.WaitGroup
	for i, c := range cfg.Checks {
		wg.Go(func() { out[i] = c.Run(ctx) })
	}
	wg.Wait()
	return out
}
