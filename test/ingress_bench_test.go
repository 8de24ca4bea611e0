package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// ingressTransitions is how many transitions one iteration measures,
// alternating fail and recover; the percentiles cover every iteration.
const ingressTransitions = 40

// BenchmarkIngressDrain measures how long a cluster's ingress takes to follow
// a DNS transition: from the unhealthy (or healthy) report sent to
// bin/coredns, which applies it and notifies the sidecar, to a real
// HAProxy's servers all in DRAIN (or ready again), read back over the
// runtime API every 1 ms. The baseline, in the same transitions, is the
// same report to the changed DNS answer (raw UDP queries every 1 ms), so the
// extra cost of the ingress is the difference.
func BenchmarkIngressDrain(b *testing.B) {
	b1, b2 := startEchoBackend(b), startEchoBackend(b)
	lb := testutil.StartHAProxy(b, b1.ln.Addr().String(), b2.ln.Addr().String())
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	b.Cleanup(sink.Close)
	sc := startIngressSidecar(b, fmt.Sprintf(`cluster: east
key_file: k.key
report_to: [%s]
listen: LISTEN
checks:
  - {name: up, exec: {command: [/bin/true]}, interval: 1s}
ingress:
  - haproxy: {socket: %s, backends: [web]}
`, sink.URL, lb.Socket))
	dns := realCoreDNS(b, ingressCorefile(b, sc.url+"/v1/distribution"))
	east := newPusher("east", eastKey)
	if code, err := east.push(dns.api, true); code != 204 {
		b.Fatalf("healthy report: %d %v", code, err)
	}
	testutil.WaitFor(b, 5*time.Second, "the ingress serving", func() bool { return sc.ingress(b).State == "serving" })

	const ready, drained = "s1=no check s2=no check", "s1=DRAIN s2=DRAIN"
	var toIngress, toDNS, extra []float64
	b.ResetTimer()
	for range b.N {
		for i := range ingressTransitions {
			healthy := i%2 == 1
			wantLB, wantDNS := drained, "127.0.0.12"
			if healthy {
				wantLB, wantDNS = ready, "127.0.0.11 127.0.0.12"
			}
			start := time.Now()
			if code, err := east.push(dns.api, healthy); code != 204 {
				b.Fatalf("report: %d %v", code, err)
			}
			dnsDone := make(chan time.Duration, 1)
			go func() {
				dnsDone <- pollEveryMs(start, func() bool { return answerSet(dns.dns, "svc1.net.") == wantDNS })
			}()
			lbTook := pollEveryMs(start, func() bool { return lb.Statuses(b) == wantLB })
			dnsTook := <-dnsDone
			if lbTook < 0 || dnsTook < 0 {
				b.Fatalf("transition %d (healthy=%v): ingress %s, dns %s (negative: not reached in 5 s)", i, healthy, lbTook, dnsTook)
			}
			toIngress = append(toIngress, ms(lbTook))
			toDNS = append(toDNS, ms(dnsTook))
			extra = append(extra, ms(lbTook-dnsTook))
		}
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		s    []float64
	}{{"ingress", toIngress}, {"dns", toDNS}, {"extra", extra}} {
		slices.Sort(m.s)
		b.ReportMetric(nearestRank(m.s, 0.50), m.name+"-p50-ms")
		b.ReportMetric(nearestRank(m.s, 0.99), m.name+"-p99-ms")
	}
	b.ReportMetric(float64(len(toIngress)), "transitions")
}

// pollEveryMs checks cond every millisecond and returns the time since start
// when it first holds; -1 after 5 s.
func pollEveryMs(start time.Time, cond func() bool) time.Duration {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			return -1
		}
		<-tick.C
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// nearestRank is the q quantile of sorted s.
func nearestRank(s []float64, q float64) float64 {
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
