package test

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// metricValue is the value of an unlabelled metric, -1 when absent.
func metricValue(t *testing.T, s *realServer, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(metrics(t, s), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// stalledReaders opens n event streams that never read a byte, with a small
// receive buffer so that the server's writes soon block.
func stalledReaders(t *testing.T, api string, n int) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
	}}
	host := strings.TrimPrefix(api, "http://")
	for range n {
		c, err := d.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /v1/events/stream HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	}
}

// reportLatencies pushes n reports that each flip east, and returns how
// long each took to be answered.
func flipLatencies(t *testing.T, p *pusher, api string, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if code, err := p.push(api, i%2 == 1); code != 204 {
			t.Fatalf("report %d: %d %v", i, code, err)
		}
		out = append(out, time.Since(start))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func pct(d []time.Duration, p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }

// Readers of the event stream that stop reading do not slow report
// handling: report latency with 100 stalled readers stays close to the
// latency with none, measured in the same run. (The kernel's socket buffers
// absorb about 2 MB per stalled reader before its writes block and it is
// dropped: TestStreamDropsStalledConnection in the plugin shows that part.)
func TestEventStreamStalledReadersDoNotSlowReports(t *testing.T) {
	s := realCoreDNS(t, pushCorefile(t, "stale 1h"))
	p := newPusher("east", eastKey)
	const n, readers = 300, 100
	flipLatencies(t, p, s.api, 20) // warm up connections and code paths
	base := flipLatencies(t, p, s.api, n)

	stalledReaders(t, s.api, readers)
	testutil.WaitFor(t, 10*time.Second, "100 stream readers", func() bool {
		return metricValue(t, s, "coredns_healthswitch_stream_subscribers") == readers
	})
	stalled := flipLatencies(t, p, s.api, n)
	t.Logf("report latency, %d flips each: no readers p50 %v p99 %v max %v; %d stalled readers p50 %v p99 %v max %v; dropped %v",
		n, pct(base, .5), pct(base, .99), base[n-1], readers, pct(stalled, .5), pct(stalled, .99), stalled[n-1],
		metricValue(t, s, "coredns_healthswitch_stream_dropped_total"))
	// Generous: the machine is shared; a blocked engine would show as
	// seconds (the write timeout), not as a multiple of a millisecond.
	if limit := max(5*pct(base, .99), 50*time.Millisecond); pct(stalled, .99) > limit {
		t.Errorf("p99 report latency %v with %d stalled readers, over %v (no readers: %v)", pct(stalled, .99), readers, limit, pct(base, .99))
	}
}
