package healthswitch

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	_ "github.com/coredns/coredns/plugin/hosts"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/report"
)

// The same records both ways: svc1.net answered with two clusters' addresses.
const benchBlock = "healthswitch {\n cluster east 192.0.2.10 192.0.2.11\n cluster west 198.51.100.10\n}"

func benchServe(b *testing.B, h plugin.Handler) {
	m := new(dns.Msg)
	m.SetQuestion("svc1.net.", dns.TypeA)
	w := &test.ResponseWriter{}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := dnstest.NewRecorder(w)
		if _, err := h.ServeDNS(ctx, rec, m); err != nil || len(rec.Msg.Answer) != 3 {
			b.Fatalf("answer %v, err %v", rec.Msg, err)
		}
	}
}

func BenchmarkServeDNS(b *testing.B) {
	c := caddy.NewTestController("dns", benchBlock)
	c.ServerBlockKeys = []string{"svc1.net.:53"}
	cfg, err := parse(c)
	if err != nil {
		b.Fatal(err)
	}
	benchServe(b, newHealthSwitch(cfg))
}

// BenchmarkServeDNSHosts is the baseline: CoreDNS's hosts plugin serving the
// same name and addresses, through its own setup.
func BenchmarkServeDNSHosts(b *testing.B) {
	c := caddy.NewTestController("dns", "hosts {\n 192.0.2.10 svc1.net\n 192.0.2.11 svc1.net\n 198.51.100.10 svc1.net\n}")
	c.ServerBlockKeys = []string{"svc1.net.:53"}
	setupHosts, err := caddy.DirectiveAction("dns", "hosts")
	if err != nil {
		b.Fatal(err)
	}
	if err := setupHosts(c); err != nil {
		b.Fatal(err)
	}
	benchServe(b, dnsserver.GetConfig(c).Plugin[0](nil))
}

// BenchmarkIngest measures verify+apply of signed reports on one core:
// "heartbeat" confirms the state the cluster is in (nothing to republish),
// "flip" changes the answers with every second report. The bodies are
// encoded and signed in batches outside the timer, so B/op and allocs/op
// are the server's alone.
func BenchmarkIngest(b *testing.B) {
	for _, tc := range []struct {
		name    string
		healthy func(seq uint64) bool
	}{
		{"heartbeat", func(uint64) bool { return true }},
		{"flip", func(seq uint64) bool { return seq%2 == 0 }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			key := filepath.Join(b.TempDir(), "key")
			os.WriteFile(key, pushKey, 0o600)
			c := caddy.NewTestController("dns", fmt.Sprintf("healthswitch {\n cluster east 192.0.2.10 {\n  key_file %s\n }\n cluster west 198.51.100.10\n}", key))
			c.ServerBlockKeys = []string{"svc1.net.:53"}
			cfg, err := parse(c)
			if err != nil {
				b.Fatal(err)
			}
			h := newHealthSwitch(cfg)
			type signed struct {
				body []byte
				hdr  http.Header
			}
			var batch []signed
			var seq uint64
			sign := func() {
				batch = batch[:0]
				for range 1024 {
					seq++
					r := report.Report{Version: 1, Cluster: "east", BootID: "b", Sequence: seq, SentAt: time.Now(), Healthy: tc.healthy(seq), IntervalMS: 100,
						Checks: []report.Check{{Name: "web", Kind: "http", Healthy: tc.healthy(seq), Critical: true, ObservedAt: time.Now()}}}
					body, _ := r.Encode()
					hdr := http.Header{}
					ts, sig := report.Sign(pushKey, time.Now(), body)
					hdr.Set(report.HeaderTimestamp, ts)
					hdr.Set(report.HeaderSignature, sig)
					batch = append(batch, signed{body, hdr})
				}
			}
			sign()
			h.engine.mu.Lock()
			epoch := h.engine.epoch
			h.engine.mu.Unlock()
			b.ReportAllocs()
			var lat time.Duration
			i := 0
			for b.Loop() {
				if i == len(batch) {
					b.StopTimer()
					sign()
					i = 0
					b.StartTimer()
				}
				start := time.Now()
				if aerr := h.ingest(context.Background(), batch[i].body, batch[i].hdr, start); aerr != nil {
					b.Fatal(aerr)
				}
				lat += time.Since(start)
				i++
			}
			b.ReportMetric(float64(lat.Microseconds())/float64(b.N), "us-received-to-applied")
			h.engine.mu.Lock()
			published := h.engine.epoch - epoch
			h.engine.mu.Unlock()
			// The first report takes east from unknown to up: one publish.
			if tc.name == "heartbeat" && published != 1 {
				b.Errorf("%d heartbeats published %d snapshots, want 1 (the first report)", b.N, published)
			}
		})
	}
}

// BenchmarkPublishAtScale is the cost of one transition with 10,000 names and
// 100 clusters: rebuilding and swapping the answer snapshot.
func BenchmarkPublishAtScale(b *testing.B) {
	for _, tc := range []struct {
		name  string
		serve func(n int) string // the cluster list of name n
	}{
		{"every-name-all-clusters", func(int) string { return allClusters(100) }},
		{"100-distinct-pairs", func(n int) string { return fmt.Sprintf("c%d c%d", n%100, (n+1)%100) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var sb strings.Builder
			sb.WriteString("healthswitch {\n")
			for c := range 100 {
				fmt.Fprintf(&sb, " cluster c%d 10.%d.%d.1\n", c, c/250, c%250)
			}
			for n := range 10000 {
				fmt.Fprintf(&sb, " app n%d.svc1.net %s\n", n, tc.serve(n))
			}
			sb.WriteString("}")
			c := caddy.NewTestController("dns", sb.String())
			c.ServerBlockKeys = []string{"svc1.net.:53"}
			cfg, err := parse(c)
			if err != nil {
				b.Fatal(err)
			}
			e := newEngine(cfg)
			cs := e.clusters["c7"]
			b.ReportAllocs()
			for b.Loop() {
				e.mu.Lock()
				cs.drained = !cs.drained
				e.update(cs, cause{})
				e.mu.Unlock()
			}
		})
	}
}

func allClusters(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i)
	}
	return strings.Join(names, " ")
}
