package test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// BenchmarkDBFaultToAnswer: the real bin/coredns and sidecar, cluster east's
// sidecar checking a MariaDB or a Redis, west's a port that stays up. The
// database is killed (SIGKILL) and the DNS answer of svc1.net is read over
// UDP every millisecond until east leaves it; then the database is restarted
// and east must come back before the next fault. Each database twice in the
// same run: watch on (its held connection wakes the check; 1 s safety poll)
// and watch off (polled every 100 ms). At most 30 faults per lane within its
// time budget; the count is reported.
func BenchmarkDBFaultToAnswer(b *testing.B) {
	if testing.Short() {
		b.Skip("runs coredns, two sidecars, MariaDB and Redis")
	}
	modes := []struct{ name, timing string }{
		{"watch", "interval: 1s, timeout: 500ms, watch: on"},
		{"poll100ms", "interval: 100ms, timeout: 80ms, watch: off"},
	}
	b.Run("mariadb", func(b *testing.B) {
		m := testutil.StartMariaDB(b, 20)
		for _, mode := range modes {
			b.Run(mode.name, func(b *testing.B) {
				check := fmt.Sprintf("  - {name: db, mysql: {dsn: '%s'}, %s}\n", m.DSN("probe"), mode.timing)
				for range b.N {
					dbFaultToAnswer(b, check, m.Stop, m.Start, 30, 60*time.Second)
				}
			})
		}
	})
	b.Run("redis", func(b *testing.B) {
		r := testutil.StartRedis(b)
		for _, mode := range modes {
			b.Run(mode.name, func(b *testing.B) {
				check := fmt.Sprintf("  - {name: cache, redis: {address: '%s'}, %s}\n", r.Addr, mode.timing)
				for range b.N {
					dbFaultToAnswer(b, check, r.Stop, r.Start, 30, 30*time.Second)
				}
			})
		}
	})
}

func dbFaultToAnswer(b *testing.B, eastCheck string, stop, start func(), faults int, budget time.Duration) {
	b.Helper()
	s := realCoreDNS(b, pushCorefile(b, ""))
	bin := realBinary(b, "healthswitch-sidecar")
	startSidecarChecks(b, bin, "east", eastKey, s.api, eastCheck)
	startSidecarChecks(b, bin, "west", westKey, s.api, fmt.Sprintf("  - {name: api, tcp: {address: '%s'}}\n", strings.TrimPrefix(s.api, "http://")))

	both, westOnly := "127.0.0.11 127.0.0.12", "127.0.0.12"
	var lat []time.Duration
	end := time.Now().Add(budget)
	b.ResetTimer()
	for len(lat) < faults && time.Now().Before(end) {
		testutil.WaitFor(b, 10*time.Second, "both clusters answered", func() bool { return answerSet(s.dns, "svc1.net.") == both })
		time.Sleep(rand.N(100 * time.Millisecond)) // a random phase of the check's period
		t0 := time.Now()
		stop()
		testutil.WaitFor(b, 2*time.Second, "east removed from the answer", func() bool { return answerSet(s.dns, "svc1.net.") == westOnly })
		lat = append(lat, time.Since(t0))
		start()
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms/fault")
	b.ReportMetric(ms(lat[(len(lat)*99-1)/100]), "p99-ms/fault")
	b.ReportMetric(float64(len(lat)), "faults")
}
