// Command bench measures healthswitch against its baselines and writes
// bench/results.md and bench/results.json (make bench). Every process it
// starts listens on loopback, every load is bounded in count and time, and
// the whole run takes a few minutes on 2 cores.
//
// One section: go run ./bench -only events; some of its sources:
// -sources postgres,nftables. HS_BENCH_DEBUG=1 logs each fault's timeline
// (the sidecar's failing run, the report received and applied by the DNS
// server, the answer changed), in ms from the fault.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Results is everything results.json holds.
type Results struct {
	Machine  Machine          `json:"machine"`
	Failover []FailoverResult `json:"failover"`
	DNS      []DNSResult      `json:"dns"`
	Ingest   []IngestResult   `json:"ingest"`
	Sidecar  []SidecarResult  `json:"sidecar"`
	Scale    []ScaleResult    `json:"scale"`
	Events   []EventsResult   `json:"events"`
	Notes    []string         `json:"notes"`
	Elapsed  string           `json:"elapsed"`
}

// Machine says where the figures come from.
type Machine struct {
	Date    string `json:"date"`
	NProc   int    `json:"nproc"`
	CPU     string `json:"cpu"`
	Kernel  string `json:"kernel"`
	Go      string `json:"go"`
	Commit  string `json:"commit"`
	Dnsperf string `json:"dnsperf"`
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func dist(ms []float64) Dist {
	if len(ms) == 0 {
		return Dist{}
	}
	s := append([]float64(nil), ms...)
	sort.Float64s(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Dist{N: len(s), P50: quantile(s, 0.50), P99: quantile(s, 0.99), Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// quantile of sorted s, nearest rank.
func quantile(s []float64, q float64) float64 {
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func main() {
	binDir := flag.String("bin", "bin", "folder holding coredns and healthswitch-sidecar")
	out := flag.String("out", "bench", "where results.md and results.json go")
	only := flag.String("only", "", "comma-separated sections to run (failover,dns,ingest,sidecar,scale,events); empty: all")
	flag.IntVar(&eventsFaults, "faults", eventsFaults, "with events: faults per lane, 1..120")
	flag.StringVar(&eventSources, "sources", "", "with events: comma-separated event sources to run ("+strings.Join(laneSources, ",")+"); empty: all")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if eventsFaults < 1 || eventsFaults > 120 {
		// The DNS server keeps its last 256 transitions, two per fault.
		log.Fatalf("-faults %d: must be in 1..120", eventsFaults)
	}

	b := &bencher{coredns: filepath.Join(*binDir, "coredns"), sidecar: filepath.Join(*binDir, "healthswitch-sidecar")}
	for _, p := range []string{b.coredns, b.sidecar} {
		if _, err := os.Stat(p); err != nil {
			log.Fatalf("%s is missing: run make build", p)
		}
	}
	var err error
	if b.dir, err = os.MkdirTemp("", "healthswitch-bench"); err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(b.dir)

	start := time.Now()
	res := &Results{Machine: machine()}
	want := func(s string) bool { return *only == "" || strings.Contains(","+*only+",", ","+s+",") }
	ctx := context.Background()
	if want("failover") {
		res.Failover = b.failover(ctx)
	}
	if want("dns") {
		res.DNS, res.Notes = b.dnsperfAll(ctx, res.Notes)
	}
	if want("ingest") {
		res.Ingest = b.ingest(ctx)
	}
	if want("sidecar") {
		res.Sidecar = b.sidecarCost(ctx)
	}
	if want("scale") {
		res.Scale = b.scale(ctx)
	}
	if want("events") {
		res.Events = b.events(ctx)
	}
	res.Notes = append(res.Notes,
		fmt.Sprintf("p99 over about 30 faults (the failover section) is the second-largest or largest sample: read it as a near-worst case. The events section injects %d faults per lane.", eventsFaults),
		"During the DNS section this bench process (the report pushers) is pinned to CPU 1, and coredns and dnsperf to CPU 0, so under push CPU 0 loses only what the server spends on reports; elsewhere the push load and the ingest workers run in this process, unpinned.",
		"The failover baselines run in parallel lanes (10 and 30 clusters on one DNS server) so they fit the time budget; the healthswitch row runs 3 lanes. Parallel lanes add load on the DNS server, which can only make the baselines slower, not faster; the poll period adds up to one period (1, 10 and 20 ms) to the client figures.",
		"Everything listens on 127.0.0.1 (app servers, sidecars, DNS, push API); every load loop is bounded by time and count.")
	res.Elapsed = time.Since(start).Round(time.Second).String()

	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	j, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "results.json"), append(j, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	md := markdown(res)
	if err := os.WriteFile(filepath.Join(*out, "results.md"), []byte(md), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Print(md)
	log.Printf("wrote %s and %s in %s", filepath.Join(*out, "results.md"), filepath.Join(*out, "results.json"), res.Elapsed)
}

type bencher struct {
	coredns, sidecar, dir string
}

func (b *bencher) subdir(name string) string {
	d := filepath.Join(b.dir, name)
	os.MkdirAll(d, 0o755)
	return d
}

func machine() Machine {
	m := Machine{Date: time.Now().UTC().Format(time.RFC3339), NProc: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("dnsperf", "-h").CombinedOutput(); err == nil || len(out) > 0 {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "Version") {
				m.Dnsperf = strings.TrimSpace(strings.TrimPrefix(l, "Version"))
			}
		}
	}
	return m
}
