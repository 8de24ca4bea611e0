package store

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// The benchmarks measure how long a change put through one replica takes to
// reach the others' subscriptions, beside the baseline of the `peers` path:
// one HTTP POST over loopback to another process.

const benchChanges = 200

// reportPercentiles reports p50/p99/max of lat in milliseconds.
func reportPercentiles(b *testing.B, prefix string, lat []time.Duration) {
	slices.Sort(lat)
	at := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / 1e6
	}
	b.ReportMetric(at(0.50), prefix+"p50-ms")
	b.ReportMetric(at(0.99), prefix+"p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/1e6, prefix+"max-ms")
}

// seenAt subscribes to s and returns a channel per change reason.
type seenAt struct {
	mu   sync.Mutex
	wait map[string]chan time.Time
}

func newSeen(stores []*EtcdStore) []*seenAt {
	var out []*seenAt
	for _, s := range stores {
		w := &seenAt{wait: map[string]chan time.Time{}}
		s.Subscribe(func(c Change) {
			if c.Kind != KindSignal || c.Signal == nil {
				return
			}
			now := time.Now()
			w.ch(c.Signal.Reason) <- now
		})
		out = append(out, w)
	}
	return out
}

func (w *seenAt) ch(reason string) chan time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.wait[reason]
	if c == nil {
		c = make(chan time.Time, 1)
		w.wait[reason] = c
	}
	return c
}

// propagate puts benchChanges (or b.N) signals through a, one at a time,
// and returns how long each took to reach each subscriber.
func propagate(b *testing.B, a *EtcdStore, subs []*seenAt) (each, last []time.Duration) {
	const warmup = 10 // first watch events and connections, not measured
	n := max(b.N, benchChanges) + warmup
	b.ResetTimer()
	for i := range n {
		reason := "c" + strconv.Itoa(i)
		start := time.Now()
		if err := a.PutSignal(ctx, "east", Signal{Healthy: i%2 == 0, Reason: reason}); err != nil {
			b.Fatal(err)
		}
		var slowest time.Duration
		for _, w := range subs {
			select {
			case at := <-w.ch(reason):
				each = append(each, at.Sub(start))
				slowest = max(slowest, at.Sub(start))
			case <-time.After(10 * time.Second):
				b.Fatalf("change %d not seen within 10s", i)
			}
		}
		if i < warmup {
			each, last = each[:0], last[:0]
			continue
		}
		last = append(last, slowest)
	}
	b.StopTimer()
	return each, last
}

func benchStore(b *testing.B, endpoints []string, replica string) *EtcdStore {
	s, err := NewEtcd(EtcdOptions{Endpoints: endpoints, Prefix: "/bench", Replica: replica, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkEtcdPropagation: A puts, B and C (other replicas, other
// clients) hear it; a 3-member cluster on loopback with fsync on.
func BenchmarkEtcdPropagation(b *testing.B) {
	ec := testutil.StartEtcd(b, 3)
	a := benchStore(b, ec.Endpoints(), "a")
	stores := []*EtcdStore{benchStore(b, ec.Endpoints(), "b"), benchStore(b, ec.Endpoints(), "c")}
	for _, s := range append(stores, a) {
		s.Load(ctx)
	}
	each, _ := propagate(b, a, newSeen(stores))
	reportPercentiles(b, "", each)
}

// BenchmarkEtcdFanout100: one writer, 100 subscribing replicas in this
// process (each its own client and watch), on the same prefix.
func BenchmarkEtcdFanout100(b *testing.B) {
	ec := testutil.StartEtcd(b, 3)
	a := benchStore(b, ec.Endpoints(), "a")
	var stores []*EtcdStore
	for i := range 100 {
		stores = append(stores, benchStore(b, ec.Endpoints(), fmt.Sprintf("r%d", i)))
	}
	for _, s := range append(stores, a) {
		s.Load(ctx)
	}
	each, last := propagate(b, a, newSeen(stores))
	reportPercentiles(b, "", each)
	reportPercentiles(b, "all100-", last)
}

const sinkEnv = "HS_STORE_TEST_HTTP_SINK"

// httpSink is the other process of the baseline: it answers every POST with
// 204 once it has read the body, as a peer's /v1/report does.
func httpSink() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(l.Addr().String())
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
}

// BenchmarkBaselineHTTPPost: the `peers` path, one signed-report-sized POST
// to another local process, until its 204 is back (a round trip, where the
// etcd figures are one way).
func BenchmarkBaselineHTTPPost(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sinkEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	url := "http://" + strings.TrimSpace(addr) + "/v1/report"
	body := bytes.Repeat([]byte("x"), 400)
	client := &http.Client{Timeout: 5 * time.Second}
	n := max(b.N, benchChanges)
	lat := make([]time.Duration, 0, n)
	b.ResetTimer()
	for range n {
		start := time.Now()
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, "", lat)
}

// BenchmarkFilePut: what a change costs its caller with `state FILE` (the
// write itself happens in the background, coalesced).
func BenchmarkFilePut(b *testing.B) {
	s, err := OpenFile(b.TempDir()+"/state.json", FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; b.Loop(); i++ {
		s.PutSignal(ctx, "east", Signal{Healthy: i%2 == 0, Reason: "r"})
	}
}

// BenchmarkFileFlush: one durable write of a ten-cluster state (temp file,
// fsync, rename, fsync of the directory), as on shutdown.
func BenchmarkFileFlush(b *testing.B) {
	s, err := OpenFile(b.TempDir()+"/state.json", FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := range 10 {
		putCluster(b, s, fmt.Sprintf("c%d", i), fullCluster(i))
	}
	n := max(b.N, benchChanges)
	lat := make([]time.Duration, 0, n)
	b.ResetTimer()
	for i := range n {
		s.PutSignal(ctx, "c0", Signal{Reason: strconv.Itoa(i)})
		start := time.Now()
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, "", lat)
}
