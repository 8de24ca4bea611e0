package sidecar

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// BenchmarkHeldFaultToResult kills a real MariaDB or Redis (SIGKILL) and
// measures, on the same fault, how long until a failing result is known by
// two copies of the same check: one run by its event source's wake (the
// held connection breaking) and polled every 100 ms as a safety net, one
// only polled every 100 ms (watch off). Both latencies end when the failing
// run returns; seen-by-wake counts the faults the first copy saw through a
// wake. The server is restarted
// between faults, at most `faults` times within `budget`. One iteration is
// the whole measurement.
func BenchmarkHeldFaultToResult(b *testing.B) {
	if testing.Short() {
		b.Skip("starts MariaDB and Redis")
	}
	b.Run("mariadb", func(b *testing.B) {
		m := testutil.StartMariaDB(b, 20)
		yaml := "mysql: {dsn: '" + m.DSN("probe") + "'}\ninterval: 100ms\ntimeout: 80ms"
		for range b.N {
			heldVsPolled(b, yaml, watchMySQL, m.Stop, m.Start, 30, 50*time.Second)
		}
	})
	b.Run("redis", func(b *testing.B) {
		r := testutil.StartRedis(b)
		yaml := "redis: {address: '" + r.Addr + "'}\ninterval: 100ms\ntimeout: 80ms"
		for range b.N {
			heldVsPolled(b, yaml, watchRedis, r.Stop, r.Start, 30, 20*time.Second)
		}
	})
}

// observed is what a runner of a check saw: its last result, and when the
// first failing result since reset was known and whether a wake ran it.
type observed struct {
	last      atomic.Pointer[Result]
	firstDown atomic.Pointer[downAt]
}

type downAt struct {
	at    time.Time
	woken bool
}

func (o *observed) run(ctx context.Context, c *Check, woken bool) {
	r := c.Run(ctx)
	if !r.Healthy {
		o.firstDown.CompareAndSwap(nil, &downAt{r.At.Add(r.Duration), woken})
	}
	o.last.Store(&r)
}

func (o *observed) reset() { o.firstDown.Store(nil) }

func (o *observed) down() (downAt, bool) {
	d := o.firstDown.Load()
	if d == nil {
		return downAt{}, false
	}
	return *d, true
}

func (o *observed) up() bool {
	r := o.last.Load()
	return r != nil && r.Healthy
}

func heldVsPolled(b *testing.B, yaml string, source func(context.Context, *Check, func()) error, stop, start func(), faults int, budget time.Duration) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	woken, polled := newCheck(b, yaml), newCheck(b, yaml)
	var held, poll observed

	// TEMPORARY stand-in for the watch framework (branch events), as
	// contract 8 has it: a wake runs the check at once (one run in flight,
	// one pending) and polling at the interval goes on as a safety net.
	wakes := make(chan struct{}, 1)
	go source(ctx, woken, func() {
		select {
		case wakes <- struct{}{}:
		default:
		}
	})
	go runEvery(ctx, woken, &held, wakes)
	go runEvery(ctx, polled, &poll, nil)

	var heldLat, pollLat []time.Duration
	byWake := 0 // faults the held check saw first through a wake, not its poll
	end := time.Now().Add(budget)
	b.ResetTimer()
	for len(heldLat) < faults && time.Now().Before(end) {
		testutil.WaitFor(b, 10*time.Second, "both checks up", func() bool { return held.up() && poll.up() })
		time.Sleep(rand.N(polled.Period())) // land the fault at a random phase of the poll
		held.reset()
		poll.reset()
		t0 := time.Now()
		stop()
		var heldAt, pollAt downAt
		testutil.WaitFor(b, 2*time.Second, "both checks down", func() bool {
			var ok1, ok2 bool
			heldAt, ok1 = held.down()
			pollAt, ok2 = poll.down()
			return ok1 && ok2
		})
		heldLat, pollLat = append(heldLat, heldAt.at.Sub(t0)), append(pollLat, pollAt.at.Sub(t0))
		if heldAt.woken {
			byWake++
		}
		start()
	}
	b.StopTimer()
	reportPercentiles(b, "held", heldLat)
	reportPercentiles(b, "poll100ms", pollLat)
	b.ReportMetric(float64(len(heldLat)), "faults")
	b.ReportMetric(float64(byWake), "seen-by-wake")
}

// runEvery runs c at its interval, and at once on every wake (nil: never).
func runEvery(ctx context.Context, c *Check, o *observed, wakes <-chan struct{}) {
	t := time.NewTicker(c.Period())
	defer t.Stop()
	woken := false
	for {
		o.run(ctx, c, woken)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			woken = false
		case <-wakes:
			woken = true
		}
	}
}

// reportPercentiles reports p50 and p99 of lat in milliseconds.
func reportPercentiles(b *testing.B, name string, lat []time.Duration) {
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lat[len(lat)/2]), name+"-p50-ms")
	b.ReportMetric(ms(lat[(len(lat)*99-1)/100]), name+"-p99-ms")
}
