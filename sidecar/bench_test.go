package sidecar

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// BenchmarkFaultToPush measures how long it takes from an HTTP server
// turning 500 until a real receiver holds a signed report with healthy=false,
// with the default 100 ms interval and fall 1. Each iteration also waits for
// the recovery so the next fault starts from a healthy cluster.
func BenchmarkFaultToPush(b *testing.B) {
	rc := newReceiver(b)
	web := newFlappy(b)
	cfg := loadConfig(b, `cluster: east
key_file: test.key
report_to: [`+rc.URL+`]
listen: 127.0.0.1:0
checks:
  - {name: web, http: {url: `+web.URL+`}, rise: 1}
`)
	startSidecar(b, cfg)
	rc.waitFor(b, 2*time.Second, "healthy", func(r report.Report) bool { return r.Healthy && !r.Checks[0].ObservedAt.IsZero() })
	var lat, push []time.Duration
	b.ResetTimer()
	for range b.N {
		// Recovery is seen right after a check run; without a random pause
		// every fault would land at the same phase of the check's timer.
		time.Sleep(rand.N(cfg.Interval.Duration))
		web.code.Store(500)
		start := time.Now()
		r := rc.waitFor(b, 2*time.Second, "unhealthy", func(r report.Report) bool { return !r.Healthy })
		got := time.Now()
		lat = append(lat, got.Sub(start))
		c := r.Checks[0]
		push = append(push, got.Sub(c.ObservedAt.Add(time.Duration(c.DurationMS*float64(time.Millisecond)))))
		web.code.Store(200)
		rc.waitFor(b, 2*time.Second, "healthy again", func(r report.Report) bool { return r.Healthy })
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(sum/time.Duration(len(lat))), "ms/fault")
	b.ReportMetric(ms(lat[len(lat)*95/100]), "p95-ms/fault")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms/fault")
	var psum time.Duration
	for _, d := range push {
		psum += d
	}
	// The part after detection: check result to report received.
	b.ReportMetric(ms(psum/time.Duration(len(push))), "push-ms/fault")
}
