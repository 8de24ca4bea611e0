package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkDetectionCPU measures the CPU the DNS server spends detecting
// failures: 50 names served by 2 clusters, each cluster's ingress probed over
// HTTP every 100 ms. healthswitch probes per cluster, whatever the number of
// names. The baseline is the same server configured the way a checker that
// probes per name and backend works: 50 names x 2 backends = 100 probed
// targets. Both run idle (no queries) for the same window.
func BenchmarkDetectionCPU(b *testing.B) {
	ingress := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ingress.Close()
	const names = 50
	perCluster := detectionCorefile(names, 2, func(c int) []int {
		all := make([]int, names)
		for i := range all {
			all[i] = i
		}
		return all
	}, ingress.URL)
	perNameBackend := detectionCorefile(names, names*2, func(c int) []int { return []int{c / 2} }, ingress.URL)
	for b.Loop() {
		hs := detectionCPU(b, perCluster)
		base := detectionCPU(b, perNameBackend)
		b.ReportMetric(hs, "cpu%-per-cluster-probes")
		b.ReportMetric(base, "cpu%-per-name-backend")
		b.ReportMetric(hs/base, "ratio")
	}
}

// detectionCorefile writes a block with `names` app names and `clusters`
// clusters; serves(c) lists the names cluster c serves.
func detectionCorefile(names, clusters int, serves func(c int) []int, probe string) string {
	var sb strings.Builder
	sb.WriteString("svc.net:DNSPORT {\n    healthswitch {\n        listen 127.0.0.1:APIPORT\n        interval 100ms\n        timeout 80ms\n")
	byName := make([][]string, names)
	for c := range clusters {
		fmt.Fprintf(&sb, "        cluster c%d 127.0.%d.%d {\n            probe %s/healthz\n        }\n", c, 1+c/250, 1+c%250, probe)
		for _, n := range serves(c) {
			byName[n] = append(byName[n], fmt.Sprintf("c%d", c))
		}
	}
	for n, cs := range byName {
		fmt.Fprintf(&sb, "        app n%d.svc.net %s\n", n, strings.Join(cs, " "))
	}
	sb.WriteString("    }\n}\n")
	return strings.ReplaceAll(sb.String(), "svc1.net", "svc.net")
}

// detectionCPU starts the server and returns its CPU use in % of one core
// over a 5 s window after a 1 s warm-up.
func detectionCPU(tb testing.TB, corefile string) float64 {
	s := realCoreDNS(tb, corefile)
	time.Sleep(time.Second)
	pid := s.cmd.Process.Pid
	t0, c0 := time.Now(), cpuTime(tb, pid)
	time.Sleep(5 * time.Second)
	t1, c1 := time.Now(), cpuTime(tb, pid)
	return percentOfCore(c1-c0, t1.Sub(t0))
}
