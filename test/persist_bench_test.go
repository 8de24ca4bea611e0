package test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// BenchmarkReplicaPropagation: a report accepted by replica 1 of 3, until
// the changed answer is seen on all three (raw UDP polling every ~1 ms of
// each replica), over 200 flips, with `store etcd` (a real 3-member etcd)
// beside the baseline of `peers` (full mesh) in the same run. One iteration
// is the whole measurement.
func BenchmarkReplicaPropagation(b *testing.B) {
	if testing.Short() {
		b.Skip("starts etcd and six CoreDNS replicas")
	}
	const flips = 200
	etcd := testutil.StartEtcd(b, 3)
	store := "        store etcd " + strings.Join(etcd.Endpoints(), " ") + " {\n            prefix /hs-bench-" + fmt.Sprint(os.Getpid()) + "\n            replica REPLICA\n        }\n"
	withEtcd := startBenchReplicas(b, func(i int, _ []int) string { return strings.ReplaceAll(store, "REPLICA", fmt.Sprintf("r%d", i+1)) })
	withPeers := startBenchReplicas(b, func(i int, ports []int) string {
		var peers []string
		for j, p := range ports {
			if j != i {
				peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", p))
			}
		}
		return "        peers " + strings.Join(peers, " ") + "\n"
	})
	for range b.N {
		e := propagation(b, withEtcd, "etcd", flips)
		p := propagation(b, withPeers, "peers", flips)
		b.ReportMetric(flipPercentile(e, 50), "etcd-p50-ms")
		b.ReportMetric(flipPercentile(e, 99), "etcd-p99-ms")
		b.ReportMetric(flipPercentile(p, 50), "peers-p50-ms")
		b.ReportMetric(flipPercentile(p, 99), "peers-p99-ms")
		b.ReportMetric(flipPercentile(e, 99)/flipPercentile(p, 99), "p99-ratio-etcd/peers")
	}
}

// startBenchReplicas starts 3 replicas of east (pushed) and north (no
// signal: always answered), each with extra(i, api ports) in its block.
func startBenchReplicas(b *testing.B, extra func(i int, apiPorts []int) string) []*replica {
	dir := b.TempDir()
	east := filepath.Join(dir, "east.key")
	os.WriteFile(east, []byte(eastKey+"\n"), 0o600)
	ports := []int{freePort(b), freePort(b), freePort(b)}
	var rs []*replica
	for i, port := range ports {
		cf := `svc1.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file ` + east + `
        }
        cluster north 127.0.0.13
        listen 127.0.0.1:APIPORT
        stale 60s
` + extra(i, ports) + `    }
}
`
		r := newReplicaAt(b, fmt.Sprintf("r%d", i+1), cf, port)
		r.start()
		rs = append(rs, r)
	}
	for _, r := range rs {
		waitFor(b, 15*time.Second, r.name+" to answer", answering(r.api, r.dns))
	}
	return rs
}

// propagation flips east's health through replica 1 and returns, per flip,
// the milliseconds until every replica answers accordingly.
func propagation(b *testing.B, rs []*replica, what string, flips int) []float64 {
	p := newPusher("east", eastKey)
	p.Boot = what + "-" + fmt.Sprint(time.Now().UnixNano())
	var out []float64
	for i := range flips + 1 {
		healthy := i%2 == 0
		want := "127.0.0.13"
		if healthy {
			want = "127.0.0.11 127.0.0.13"
		}
		start := time.Now()
		if code, err := p.push(rs[0].api, healthy); code != 204 {
			b.Fatalf("%s flip %d: %d %v", what, i, code, err)
		}
		var wg sync.WaitGroup
		seen := make([]time.Duration, len(rs))
		for j, r := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seen[j] = pollUntil(r.dns, want, start, 5*time.Second)
			}()
		}
		wg.Wait()
		if slices.Contains(seen, -1) {
			b.Fatalf("%s flip %d: not every replica answered %q within 5s: %v", what, i, want, seen)
		}
		if i > 0 { // the first flip warms up
			out = append(out, float64(slices.Max(seen).Microseconds())/1000)
		}
	}
	return out
}

// pollUntil asks addr every ~1 ms until it answers want; -1 on timeout.
func pollUntil(addr, want string, start time.Time, within time.Duration) time.Duration {
	c := &dns.Client{Net: "udp", Timeout: 100 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("svc1.net.", dns.TypeA)
	for time.Since(start) < within {
		if r, _, err := c.Exchange(m, addr); err == nil {
			var ips []string
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					ips = append(ips, a.A.String())
				}
			}
			slices.Sort(ips)
			if strings.Join(ips, " ") == want {
				return time.Since(start)
			}
		}
		time.Sleep(time.Millisecond)
	}
	return -1
}

func flipPercentile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}
