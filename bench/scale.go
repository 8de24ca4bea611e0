package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/healthswitch/healthswitch/internal/demo"
)

// IngestResult is how many reports/s one DNS server accepts.
type IngestResult struct {
	Name     string  `json:"name"`
	Clusters int     `json:"clusters"`
	Workers  int     `json:"workers"`
	Seconds  float64 `json:"seconds"`
	Accepted int64   `json:"accepted"`
	Rejected int64   `json:"rejected"`
	Rate     float64 `json:"accepted_per_s"`
	CPUPct   float64 `json:"coredns_cpu_pct"` // of one core, during the run
}

// SidecarResult is a sidecar's own cost.
type SidecarResult struct {
	Name   string  `json:"name"`
	CPUPct float64 `json:"cpu_pct"` // of one core
	RSSMiB float64 `json:"rss_mib"`
	Pushes int64   `json:"pushes"`
}

// ScaleResult is the DNS server with many names and clusters.
type ScaleResult struct {
	Name      string  `json:"name"`
	Names     int     `json:"names"`
	Clusters  int     `json:"clusters"`
	Records   int     `json:"records"`
	StartMS   float64 `json:"start_ms"` // process start → first answer
	RSSMiB    float64 `json:"rss_mib"`
	PeakMiB   float64 `json:"peak_rss_mib,omitempty"` // VmHWM: the most the process held, start-up included
	Flips     int     `json:"flips,omitempty"`
	FlipP50   float64 `json:"flip_p50_ms,omitempty"` // report POST → a client sees the new answer
	FlipMax   float64 `json:"flip_max_ms,omitempty"`
	SwapP50   float64 `json:"swap_p50_ms,omitempty"` // received_at → applied_at (snapshot rebuilt and swapped)
	SwapMax   float64 `json:"swap_max_ms,omitempty"`
	IngestPS  float64 `json:"ingest_per_s,omitempty"`
	RSSAfter  float64 `json:"rss_after_mib,omitempty"`
	QueryName string  `json:"query_name"`
}

const ingestSeconds = 4

// ingest pushes as fast as a few workers can, healthy reports only (no
// transitions), against a server with loadClusters clusters.
func (b *bencher) ingest(ctx context.Context) []IngestResult {
	dir := b.subdir("ingest")
	keys, err := b.writeKeys(dir, loadClusters)
	if err != nil {
		log.Print(err)
		return nil
	}
	port, _ := demo.FreePort("127.0.0.1")
	api, _ := demo.FreePort("127.0.0.1")
	s, err := b.startDNS(ctx, "ingest", healthswitchCorefile(port, api, dir), port)
	if err != nil {
		log.Print(err)
		return nil
	}
	defer s.proc.Stop()
	log.Printf("ingest: %d clusters, as fast as possible for %ds", loadClusters, ingestSeconds)
	r := flood(fmt.Sprintf("http://127.0.0.1:%d", api), keys, ingestSeconds*time.Second, s.proc.Pid())
	r.Name = "healthswitch, 10 clusters"
	log.Printf("  %.0f reports/s accepted", r.Rate)
	return []IngestResult{r}
}

// flood pushes healthy reports from one worker per cluster for d (and at
// most 2 million reports), and measures the server's CPU meanwhile.
func flood(api string, keys map[string][]byte, d time.Duration, pid int) IngestResult {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var accepted, rejected atomic.Int64
	var wg sync.WaitGroup
	cpu0, _ := demo.CPUTime(pid)
	start := time.Now()
	for c, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &demo.Pusher{API: api, Cluster: c, Boot: fmt.Sprintf("flood-%s-%d", c, start.UnixNano()), Key: k, Client: client}
			for ctx.Err() == nil && accepted.Load()+rejected.Load() < 2_000_000 {
				if code, err := p.Push(true); err == nil && code == http.StatusNoContent {
					accepted.Add(1)
				} else {
					rejected.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu1, _ := demo.CPUTime(pid)
	return IngestResult{Clusters: len(keys), Workers: len(keys), Seconds: el.Seconds(), Accepted: accepted.Load(),
		Rejected: rejected.Load(), Rate: float64(accepted.Load()) / el.Seconds(), CPUPct: 100 * (cpu1 - cpu0).Seconds() / el.Seconds()}
}

// sidecarCost runs a sidecar at 100 ms and, as the baseline, one at 1 s
// (Kubernetes' fastest period), each with one HTTP check, side by side.
func (b *bencher) sidecarCost(ctx context.Context) []SidecarResult {
	dir := b.subdir("sidecar")
	var pushes [2]atomic.Int64
	sink := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("X-Healthswitch-Signature"), "v1=") {
			if strings.Contains(r.URL.Path, "/a/") {
				pushes[0].Add(1)
			} else {
				pushes[1].Add(1)
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}), ReadHeaderTimeout: time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Print(err)
		return nil
	}
	go sink.Serve(ln)
	defer sink.Close()
	app, err := demo.StartApp("app", "127.0.0.1:0")
	if err != nil {
		log.Print(err)
		return nil
	}
	defer app.Close()
	key := filepath.Join(dir, "k.key")
	os.WriteFile(key, []byte("sidecar-bench-key-0123456789"), 0o600)

	specs := []struct{ name, path, interval string }{
		{"healthswitch-sidecar, 1 http check every 100ms", "a", "100ms"},
		{"baseline: same sidecar every 1s (k8s fastest period)", "b", "1s"},
	}
	var procs []*demo.Proc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	for _, sp := range specs {
		lp, _ := demo.FreePort("127.0.0.1")
		cfg := fmt.Sprintf("cluster: bench\nkey_file: %s\nreport_to: [http://%s/%s/]\ninterval: %s\nheartbeat: 250ms\nlisten: 127.0.0.1:%d\nchecks:\n  - name: web\n    http: {url: %s}\n",
			key, ln.Addr(), sp.path, sp.interval, lp, app.HealthURL())
		path := filepath.Join(dir, sp.path+".yaml")
		os.WriteFile(path, []byte(cfg), 0o600)
		f, _ := os.Create(filepath.Join(dir, sp.path+".log"))
		p, err := demo.StartProc("sidecar", f, b.sidecar, "-config", path)
		f.Close()
		if err != nil {
			log.Print(err)
			return nil
		}
		procs = append(procs, p)
	}
	log.Printf("sidecar: CPU and RSS over 8 s after 1 s warm-up")
	time.Sleep(time.Second)
	cpu0 := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpu0[i], _ = demo.CPUTime(p.Pid())
		pushes[i].Store(0)
	}
	const window = 8 * time.Second
	time.Sleep(window)
	var out []SidecarResult
	for i, p := range procs {
		cpu1, _ := demo.CPUTime(p.Pid())
		rss, _ := demo.RSS(p.Pid())
		out = append(out, SidecarResult{Name: specs[i].name, CPUPct: 100 * (cpu1 - cpu0[i]).Seconds() / window.Seconds(),
			RSSMiB: float64(rss) / (1 << 20), Pushes: pushes[i].Load()})
		log.Printf("  %s: %.2f%% CPU, %.1f MiB", specs[i].name, out[i].CPUPct, out[i].RSSMiB)
	}
	return out
}

const (
	scaleNames    = 10_000
	scaleClusters = 100
	scaleFlips    = 10
)

// peakRSSMiB is the process's high-water mark of resident memory, 0 when
// unknown.
func peakRSSMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var n float64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), &n)
			return n / 1024
		}
	}
	return 0
}

func bigIP(i int) string { return fmt.Sprintf("10.1.%d.1", i) }

// scale starts healthswitch with 10,000 names each served by all 100
// clusters, and as the baseline the hosts plugin with the same 1,000,000
// name/address pairs; then a small healthswitch (2 names, 2 clusters) for
// the flip-time baseline.
func (b *bencher) scale(ctx context.Context) []ScaleResult {
	dir := b.subdir("scale")
	keys := map[string][]byte{}
	var hosts, core strings.Builder
	port, _ := demo.FreePort("127.0.0.1")
	api, _ := demo.FreePort("127.0.0.1")
	fmt.Fprintf(&core, "big.test:%d {\n    bind 127.0.0.1\n    healthswitch {\n", port)
	var all []string
	for i := range scaleClusters {
		name := fmt.Sprintf("c%d", i)
		key := []byte("scale-key-" + name + "-0123456789abcdef")
		keys[name] = key
		os.WriteFile(filepath.Join(dir, name+".key"), key, 0o600)
		fmt.Fprintf(&core, "        cluster %s %s {\n            key_file %s\n        }\n", name, bigIP(i), filepath.Join(dir, name+".key"))
		all = append(all, name)
	}
	clusterList := strings.Join(all, " ")
	for n := range scaleNames {
		fmt.Fprintf(&core, "        app n%d.big.test %s\n", n, clusterList)
		for i := range scaleClusters {
			fmt.Fprintf(&hosts, "%s n%d.big.test\n", bigIP(i), n)
		}
	}
	fmt.Fprintf(&core, "        stale 1h\n        listen 127.0.0.1:%d\n    }\n}\n", api)
	hostsFile := filepath.Join(dir, "hosts")
	os.WriteFile(hostsFile, []byte(hosts.String()), 0o644)
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", api)

	var out []ScaleResult
	// Baseline first: hosts with the same pairs.
	hport, _ := demo.FreePort("127.0.0.1")
	hostsCore := fmt.Sprintf("big.test:%d {\n    bind 127.0.0.1\n    hosts %s big.test {\n        no_reverse\n        reload 0\n    }\n}\n", hport, hostsFile)
	log.Printf("scale: hosts baseline, %d names × %d addresses", scaleNames, scaleClusters)
	if r, err := b.startBig(ctx, "scale-hosts", hostsCore, hport); err == nil {
		r.Name = "baseline: hosts plugin, same 1,000,000 name/address pairs"
		out = append(out, r.ScaleResult)
		r.stop()
	} else {
		log.Print(err)
	}

	log.Printf("scale: healthswitch, %d names × %d clusters", scaleNames, scaleClusters)
	r, err := b.startBig(ctx, "scale-healthswitch", core.String(), port)
	if err != nil {
		log.Print(err)
		return out
	}
	defer r.stop()
	r.Name = "healthswitch, 10,000 names × 100 clusters"
	for c, k := range keys {
		(&demo.Pusher{API: apiURL, Cluster: c, Boot: "warm", Key: k}).Push(true)
	}
	r.flips(apiURL, "c7", keys["c7"], "n0.big.test", bigIP(7), port)
	fl := flood(apiURL, keys, ingestSeconds*time.Second, r.proc.Pid())
	r.IngestPS = fl.Rate
	if rss, err := demo.RSS(r.proc.Pid()); err == nil {
		r.RSSAfter = float64(rss) / (1 << 20)
	}
	out = append(out, r.ScaleResult)
	log.Printf("  start %.0f ms, RSS %.0f MiB, flip p50 %.1f ms, swap p50 %.1f ms, ingest %.0f/s", r.StartMS, r.RSSMiB, r.FlipP50, r.SwapP50, r.IngestPS)

	// The same flip on the small configuration, as the baseline for size.
	sdir := b.subdir("scale-small")
	skeys, _ := b.writeKeys(sdir, loadClusters)
	sport, _ := demo.FreePort("127.0.0.1")
	sapi, _ := demo.FreePort("127.0.0.1")
	small, err := b.startBig(ctx, "scale-small", healthswitchCorefile(sport, sapi, sdir), sport)
	if err != nil {
		log.Print(err)
		return out
	}
	defer small.stop()
	small.Name, small.Names, small.Clusters, small.Records = "baseline: healthswitch, 2 names × 2 clusters (10 configured)", 2, loadClusters, 4
	sapiURL := fmt.Sprintf("http://127.0.0.1:%d", sapi)
	for c, k := range skeys {
		(&demo.Pusher{API: sapiURL, Cluster: c, Boot: "warm", Key: k}).Push(true)
	}
	small.QueryName = "svc1.net"
	small.flips(sapiURL, "east", skeys["east"], "svc1.net", "127.0.0.11", sport)
	out = append(out, small.ScaleResult)
	return out
}

type bigServer struct {
	ScaleResult
	proc *demo.Proc
}

func (s *bigServer) stop() { s.proc.Stop() }

func (b *bencher) startBig(ctx context.Context, name, corefile string, port int) (*bigServer, error) {
	dir := b.subdir(name)
	path := filepath.Join(dir, "Corefile")
	os.WriteFile(path, []byte(corefile), 0o600)
	f, _ := os.Create(filepath.Join(dir, "coredns.log"))
	defer f.Close()
	t0 := time.Now()
	p, err := demo.StartProc(name, f, b.coredns, "-conf", path, "-quiet")
	if err != nil {
		return nil, err
	}
	r := demo.NewResolver(fmt.Sprintf("127.0.0.1:%d", port))
	q := "n0.big.test"
	if strings.Contains(corefile, "svc1.net") {
		q = "svc1.net"
	}
	deadline := t0.Add(90 * time.Second)
	for {
		if ips, err := r.A(q); err == nil && len(ips) > 0 {
			break
		}
		if p.Exited() || time.Now().After(deadline) {
			p.Kill()
			lb, _ := os.ReadFile(filepath.Join(dir, "coredns.log"))
			return nil, fmt.Errorf("%s did not start: %s", name, lastLines(string(lb), 10))
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := &bigServer{proc: p, ScaleResult: ScaleResult{Names: scaleNames, Clusters: scaleClusters, Records: scaleNames * scaleClusters, QueryName: q,
		StartMS: ms(time.Since(t0))}}
	time.Sleep(500 * time.Millisecond) // let the start-up garbage be collected before RSS is read
	if rss, err := demo.RSS(p.Pid()); err == nil {
		s.RSSMiB = float64(rss) / (1 << 20)
	}
	s.PeakMiB = peakRSSMiB(p.Pid())
	return s, nil
}

// flips takes cluster down and up scaleFlips times by pushed reports and
// times each from the POST to the first answer that shows it.
func (s *bigServer) flips(api, cluster string, key []byte, name, ip string, port int) {
	r := demo.NewResolver(fmt.Sprintf("127.0.0.1:%d", port))
	p := &demo.Pusher{API: api, Cluster: cluster, Boot: "flips", Key: key}
	var flip []float64
	var starts []time.Time
	for i := range scaleFlips {
		healthy := i%2 == 1
		t0 := time.Now()
		if code, err := p.Push(healthy); err != nil || code != http.StatusNoContent {
			log.Printf("flip push: %d %v", code, err)
			return
		}
		deadline := t0.Add(10 * time.Second)
		for time.Now().Before(deadline) {
			ips, err := r.A(name)
			if err == nil && slices.Contains(ips, ip) == healthy {
				flip = append(flip, ms(time.Since(t0)))
				starts = append(starts, t0)
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	var swap []float64
	if evs, err := demo.Events(api); err == nil && len(starts) > 0 {
		for _, e := range evs {
			if e.Cluster == cluster && !e.ReceivedAt.IsZero() && !e.AppliedAt.Before(starts[0]) {
				swap = append(swap, ms(e.AppliedAt.Sub(e.ReceivedAt)))
			}
		}
	}
	df, ds := dist(flip), dist(swap)
	s.Flips, s.FlipP50, s.FlipMax, s.SwapP50, s.SwapMax = df.N, df.P50, df.Max, ds.P50, ds.Max
}
