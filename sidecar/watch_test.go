package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// watched runs c the way the sidecar does (loop, event source, polling),
// after one synchronous run so the test starts from a verdict; it stops at
// cleanup.
type watched struct {
	r   *runner
	reg *prometheus.Registry

	mu      sync.Mutex
	changes []change // each debounced change, in order
}

type change struct {
	to  hysteresis.State
	why string
}

func startWatched(t testing.TB, c *Check) *watched {
	t.Helper()
	reg := prometheus.NewRegistry()
	w := &watched{reg: reg}
	w.r = newRunner(c, newMetrics(reg, "test"), slog.New(slog.NewTextHandler(io.Discard, nil)), func() {
		ch := change{w.state(), w.why()} // onChange runs in the loop, before the next run
		w.mu.Lock()
		defer w.mu.Unlock()
		w.changes = append(w.changes, ch)
	})
	ctx, cancel := context.WithCancel(context.Background())
	w.r.once(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.r.loop(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if t.Failed() {
			st, why := w.r.watchStatus()
			_, _, _, runs, _ := w.r.snapshot()
			t.Logf("check %s: watch %s %s; %d runs, %v wakes", c.Name, st, why, runs, w.metric("healthswitch_sidecar_check_wakes_total"))
		}
	})
	return w
}

func (w *watched) state() hysteresis.State {
	_, st, _, _, _ := w.r.snapshot()
	return st
}

// waitState waits for the debounced state and returns how long it took.
func (w *watched) waitState(t testing.TB, within time.Duration, want hysteresis.State) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.WaitFor(t, within, "check "+w.r.check.Name+" "+want.String()+" (last: "+w.why()+")", func() bool { return w.state() == want })
	return time.Since(start)
}

// changedBecause is the reason of the latest debounced change, once the
// change to the state the check is in now has been told (the state is
// seen a moment before onChange is called).
func (w *watched) changedBecause(t testing.TB) string {
	t.Helper()
	var why string
	testutil.WaitFor(t, 2*time.Second, "the change to "+w.state().String()+" told", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		if n := len(w.changes); n > 0 && w.changes[n-1].to == w.state() {
			why = w.changes[n-1].why
			return true
		}
		return false
	})
	return why
}

func (w *watched) why() string {
	_, _, last, _, _ := w.r.snapshot()
	return last.Why()
}

// traceSources counts the sources established from now on, by what
// ("pidfd") and by check and what ("web/held connection").
func traceSources(t testing.TB) func(what string) int {
	var mu sync.Mutex
	seen := map[string]int{}
	traceWatch = func(c *Check, what string) {
		mu.Lock()
		defer mu.Unlock()
		seen[what]++
		seen[c.Name+"/"+what]++
	}
	t.Cleanup(func() { traceWatch = nil })
	return func(what string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[what]
	}
}

// metric sums the samples of a metric of the runner's registry.
func (w *watched) metric(name string) float64 {
	mfs, _ := w.reg.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// expectFallback waits until the event source has fallen back to polling,
// and checks that /status and the metrics say so.
func (w *watched) expectFallback(t testing.TB, why string) {
	t.Helper()
	testutil.WaitFor(t, 2*time.Second, "fallback to polling", func() bool { st, _ := w.r.watchStatus(); return st == watchStateFallback })
	if _, e := w.r.watchStatus(); !strings.Contains(e, why) {
		t.Errorf("watch_error %q, want it to contain %q", e, why)
	}
	if got := w.metric("healthswitch_sidecar_watch_fallbacks_total"); got != 1 {
		t.Errorf("watch_fallbacks_total = %v, want 1", got)
	}
	if got := w.metric("healthswitch_sidecar_check_watched"); got != 0 {
		t.Errorf("check_watched = %v, want 0", got)
	}
}

func TestWatchConfig(t *testing.T) {
	for _, tc := range []struct {
		yaml  string
		watch bool
	}{
		{"tcp: {address: 127.0.0.1:1}", true},
		{"tcp: {address: 127.0.0.1:1}\nwatch: off", false},
		{"tcp: {address: 127.0.0.1:1}\nwatch: on", true},
		{"exec: {command: [/bin/true]}", false},
		{"exec: {command: [/bin/true]}\nwatch: auto", false},
		{"process: {name: x}", true},
		{"preset: ovs", true},
		{"preset: crio", true},
		{"cgroup: {path: x}", true},
		{"postgres: {dsn: 'postgres://a@127.0.0.1/x'}", true},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			if c := newCheck(t, tc.yaml); c.watch != tc.watch {
				t.Errorf("watch = %v, want %v", c.watch, tc.watch)
			}
		})
	}
}

// TestWakesCoalesce: a burst of events while a run is in flight makes one
// run and at most one pending run, not one per event.
func TestWakesCoalesce(t *testing.T) {
	c := newCheck(t, "exec: {command: [sleep, '0.2']}\ninterval: 1h\ntimeout: 1s")
	w := startWatched(t, c)
	_, _, _, runs0, _ := w.r.snapshot()
	for range 100 {
		w.r.wake()
	}
	// A wake counts only when it found the slot free: the loop may have
	// taken the first before the burst ended, so one or two.
	taken := w.metric("healthswitch_sidecar_check_wakes_total")
	if taken < 1 || taken > 2 {
		t.Fatalf("a burst of 100 wakes took the slot %v times, want 1 or 2", taken)
	}
	want := runs0 + uint64(taken)
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%d runs", want), func() bool { _, _, _, n, _ := w.r.snapshot(); return n >= want })
	time.Sleep(500 * time.Millisecond) // a window in which no further run may start, not a wait for a condition
	if _, _, _, n, _ := w.r.snapshot(); n != want {
		t.Errorf("%d runs after the burst, want %d", n-runs0, want-runs0)
	}
}
