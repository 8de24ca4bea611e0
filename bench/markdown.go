package main

import (
	"fmt"
	"strings"
)

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func markdown(r *Results) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# healthswitch benchmarks\n\nWritten by `make bench` (bench/*.go) on %s in %s. Every figure has its baseline from the same run.\n\n", m.Date, r.Elapsed)
	fmt.Fprintf(&b, "| machine | |\n| --- | --- |\n| CPUs (nproc) | %d |\n| CPU | %s |\n| kernel | %s |\n| Go | %s |\n| commit | %s |\n| dnsperf | %s |\n\n",
		m.NProc, m.CPU, m.Kernel, m.Go, m.Commit, m.Dnsperf)

	if len(r.Failover) > 0 {
		b.WriteString("## 1. Fault → changed DNS answer\n\n")
		b.WriteString("A fault is an app's /healthz turning to HTTP 500 at a random phase of the check timer. *Client* is from the injection to the first DNS query (polled every `poll` ms) that no longer carries the cluster's address; *server* is to the DNS server's `applied_at`. The same stack (sidecar → push → plugin) each time; only the sidecar's interval and fall/rise differ, the baselines set like Kubernetes readiness probes.\n\n")
		b.WriteString("| configuration | faults | poll | client p50 | client p99 | client max | server p50 | server p99 | ratio p50 vs healthswitch | ratio p99 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		hs := r.Failover[0]
		for _, f := range r.Failover {
			fmt.Fprintf(&b, "| %s | %d | %.0f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %s | %s |\n",
				f.Name, f.Faults, f.PollMS, f.Client.P50, f.Client.P99, f.Client.Max, f.Server.P50, f.Server.P99,
				ratio(f.Client.P50, hs.Client.P50), ratio(f.Client.P99, hs.Client.P99))
		}
		b.WriteString("\n")
		for _, f := range r.Failover {
			var notes []string
			if f.TimeBound != "" {
				notes = append(notes, f.TimeBound)
			}
			if f.Note != "" {
				notes = append(notes, f.Note)
			}
			if f.Timeouts > 0 {
				notes = append(notes, fmt.Sprintf("%d faults not seen within their bound", f.Timeouts))
			}
			fmt.Fprintf(&b, "- %s: %d parallel lanes, wall time %s; detected in the cluster (observed_at) p50 %.1f ms. %s\n",
				f.Name, f.Lanes, f.WallTime, f.Detected.P50, strings.Join(notes, "; "))
		}
		b.WriteString("\n")
	}

	if len(r.DNS) > 0 {
		b.WriteString("## 2. DNS throughput and latency (dnsperf)\n\n")
		fmt.Fprintf(&b, "bin/coredns and dnsperf pinned to CPU 0, the bench process with the report pushers to CPU 1 (taskset), 8 clients, 100 outstanding, queries `svc1.net A` and `svc2.net A`, both names answered with 127.0.0.11 and 127.0.0.12. Throughput from a %d s run; latency percentiles from a separate %d s run with per-query output (`-v`, which costs dnsperf some speed: its qps is shown too). The push load is %d signed reports/s over %d clusters, 8 of them flipping health every 10 reports (snapshot swaps during the run). %d interleaved rounds; the round with the best throughput is shown, every round's qps is in results.json.\n\n",
			dnsperfSeconds, latencySeconds, pushRate, loadClusters, dnsRounds)
		b.WriteString("| server | qps | vs hosts | lost | p50 | p99 | p99 vs hosts | qps in -v run | reports/s accepted | RSS |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		base := r.DNS[0]
		for _, d := range r.DNS {
			rep := "-"
			if d.ReportsPerSec > 0 {
				rep = fmt.Sprintf("%.0f", d.ReportsPerSec)
			}
			fmt.Fprintf(&b, "| %s | %.0f | %s | %.2f%% | %.3f ms | %.3f ms | %s | %.0f | %s | %.1f MiB |\n",
				d.Name, d.QPS, ratio(d.QPS, base.QPS), d.Lost, d.P50, d.P99, ratio(d.P99, base.P99), d.LatencyQPS, rep, d.RSSMiB)
		}
		b.WriteString("\n")
	}

	if len(r.Ingest) > 0 || len(r.Sidecar) > 0 || len(r.Scale) > 0 {
		b.WriteString("## 3. Ingest, sidecar cost, scale\n\n")
	}
	const need = 400.0 // 100 clusters × a 250 ms heartbeat
	if len(r.Ingest) > 0 {
		b.WriteString("Report ingest: one worker per cluster posting signed healthy reports back to back (keep-alive) for a bounded time. Baseline: what 100 clusters with the default 250 ms heartbeat need, 400 reports/s per DNS server.\n\n")
		b.WriteString("| server | reports accepted/s | rejected | coredns CPU | vs need (400/s) |\n| --- | --- | --- | --- | --- |\n")
		for _, in := range r.Ingest {
			fmt.Fprintf(&b, "| %s | %.0f | %d | %.0f%% of a core | %s |\n", in.Name, in.Rate, in.Rejected, in.CPUPct, ratio(in.Rate, need))
		}
		for _, s := range r.Scale {
			if s.IngestPS > 0 {
				fmt.Fprintf(&b, "| %s | %.0f | | | %s |\n", s.Name, s.IngestPS, ratio(s.IngestPS, need))
			}
		}
		b.WriteString("\n")
	}
	if len(r.Sidecar) > 0 {
		b.WriteString("Sidecar cost over 8 s (one HTTP check, 250 ms heartbeat, pushing to a local sink), baseline the same sidecar at Kubernetes' fastest period:\n\n")
		b.WriteString("| sidecar | CPU (one core) | RSS | pushes in 8 s | CPU ratio |\n| --- | --- | --- | --- | --- |\n")
		base := r.Sidecar[len(r.Sidecar)-1]
		for _, s := range r.Sidecar {
			fmt.Fprintf(&b, "| %s | %.2f%% | %.1f MiB | %d | %s |\n", s.Name, s.CPUPct, s.RSSMiB, s.Pushes, ratio(s.CPUPct, base.CPUPct))
		}
		b.WriteString("\n")
	}
	if len(r.Scale) > 0 {
		b.WriteString("Scale: healthswitch with 10,000 names, each served by all 100 clusters (1,000,000 name/address pairs), against the hosts plugin serving the same pairs; the flip is one cluster's report taking it down or up (10 flips), timed from the POST to the first query that shows it, and inside the server from received_at to applied_at (snapshot rebuilt and swapped). Flip baseline: the same on the 2-name configuration.\n\n")
		b.WriteString("| server | start → first answer | RSS after start | peak RSS | RSS after flips + ingest | flip p50 | flip max | swap p50 | swap max |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, s := range r.Scale {
			fmt.Fprintf(&b, "| %s | %.0f ms | %.1f MiB | %s | %s | %s | %s | %s | %s |\n", s.Name, s.StartMS, s.RSSMiB, opt(s.PeakMiB, "%.1f MiB"),
				opt(s.RSSAfter, "%.1f MiB"), opt(s.FlipP50, "%.2f ms"), opt(s.FlipMax, "%.2f ms"), opt(s.SwapP50, "%.2f ms"), opt(s.SwapMax, "%.2f ms"))
		}
		if len(r.Scale) == 3 {
			h, big, small := r.Scale[0], r.Scale[1], r.Scale[2]
			fmt.Fprintf(&b, "\nRatios: RSS healthswitch / hosts %s (peak %s), start %s; flip at 10,000 × 100 / 2 × 2: p50 %s, swap p50 %s.\n",
				ratio(big.RSSMiB, h.RSSMiB), ratio(big.PeakMiB, h.PeakMiB), ratio(big.StartMS, h.StartMS), ratio(big.FlipP50, small.FlipP50), ratio(big.SwapP50, small.SwapP50))
		}
		b.WriteString("\n")
	}
	eventsMarkdown(&b, r.Events)
	if len(r.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

func opt(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}
