package main

import (
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/healthswitch/healthswitch/internal/demo"
)

// FailoverResult is fault → changed DNS answer for one configuration.
type FailoverResult struct {
	Name       string `json:"name"`
	Interval   string `json:"interval"`
	Fall       int    `json:"fall"`
	Rise       int    `json:"rise"`
	Lanes      int    `json:"lanes"`
	Faults     int    `json:"faults"`
	Timeouts   int    `json:"timeouts"`
	TimeBound  string `json:"time_bound,omitempty"`
	PollMS     float64
	Client     Dist   `json:"client_ms"` // fault injected → first client query with the new answer
	Server     Dist   `json:"server_ms"` // fault injected → applied_at of the transition
	Detected   Dist   `json:"detected_ms"`
	WallTime   string `json:"wall_time"`
	Note       string `json:"note,omitempty"`
	clientRaw  []float64
	serverRaw  []float64
	detectRaw  []float64
	injections []injection
}

type injection struct {
	cluster string
	at      time.Time
}

type failoverConfig struct {
	name           string
	interval       time.Duration
	fall, rise     int
	lanes, perLane int
	budget         time.Duration
	note           string
}

// The same stack three ways: healthswitch's own settings, and the sidecar
// set up like Kubernetes readiness at its fastest and at its defaults
// (periodSeconds 1 / 10, failureThreshold 3, successThreshold 1). Faults
// run on independent lanes in parallel (each lane a cluster with its own
// app and sidecar, and a name it shares with an always-up spare cluster),
// so the slow baselines fit the time budget.
var failoverConfigs = []failoverConfig{
	{name: "healthswitch (100ms, fall 1, rise 2)", interval: 100 * time.Millisecond, fall: 1, rise: 2, lanes: 3, perLane: 12, budget: 60 * time.Second},
	{name: "k8s fastest readiness (1s, fall 3)", interval: time.Second, fall: 3, rise: 1, lanes: 10, perLane: 3, budget: 90 * time.Second},
	{name: "k8s default readiness (10s, fall 3)", interval: 10 * time.Second, fall: 3, rise: 1, lanes: 30, perLane: 1, budget: 75 * time.Second,
		note: "one fault per lane on 30 parallel lanes, time-bound to 75 s"},
}

func (b *bencher) failover(ctx context.Context) []FailoverResult {
	var out []FailoverResult
	for i, fc := range failoverConfigs {
		log.Printf("failover %d/%d: %s, %d lanes × %d faults", i+1, len(failoverConfigs), fc.name, fc.lanes, fc.perLane)
		r, err := b.failoverRun(ctx, fc, fmt.Sprintf("failover-%d", i))
		if err != nil {
			log.Printf("failover %s: %v", fc.name, err)
			r.Note = "error: " + err.Error()
		}
		log.Printf("  client p50 %.1f ms p99 %.1f ms max %.1f ms over %d faults", r.Client.P50, r.Client.P99, r.Client.Max, r.Client.N)
		out = append(out, r)
	}
	return out
}

func spareIP() string        { return "10.99.255.1" }
func laneIP(i int) string    { return fmt.Sprintf("10.99.%d.%d", i/250, i%250+1) }
func laneName(i int) string  { return fmt.Sprintf("l%d.bench.test", i) }
func laneClust(i int) string { return fmt.Sprintf("c%d", i) }

func (b *bencher) failoverRun(ctx context.Context, fc failoverConfig, sub string) (FailoverResult, error) {
	res := FailoverResult{Name: fc.name, Interval: fc.interval.String(), Fall: fc.fall, Rise: fc.rise, Lanes: fc.lanes, Note: fc.note}
	dir := b.subdir(sub)
	dnsPort, _ := demo.FreePort("127.0.0.1")
	apiPort, _ := demo.FreePort("127.0.0.1")
	opt := demo.Options{Dir: dir, CoreDNS: b.coredns, Sidecar: b.sidecar,
		DNS: fmt.Sprintf("127.0.0.1:%d", dnsPort), API: fmt.Sprintf("127.0.0.1:%d", apiPort),
		Zones: []string{"bench.test"}, Interval: fc.interval, Fall: fc.fall, Rise: fc.rise}
	apps := make([]*demo.App, fc.lanes)
	defer func() {
		for _, a := range apps {
			if a != nil {
				a.Close()
			}
		}
	}()
	var clusters []string
	for i := range fc.lanes {
		a, err := demo.StartApp(laneClust(i), "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		apps[i] = a
		opt.Clusters = append(opt.Clusters, demo.ClusterSpec{Name: laneClust(i), IPs: []string{laneIP(i)}, Health: a.HealthURL()})
		opt.Apps = append(opt.Apps, fmt.Sprintf("%s %s spare", laneName(i), laneClust(i)))
		clusters = append(clusters, laneClust(i))
	}
	opt.Clusters = append(opt.Clusters, demo.ClusterSpec{Name: "spare", IPs: []string{spareIP()}})
	st, err := demo.NewStack(opt)
	if err != nil {
		return res, err
	}
	if err := st.Start(ctx); err != nil {
		return res, err
	}
	defer st.Stop()
	wctx, cancel := context.WithTimeout(ctx, 3*fc.interval+10*time.Second)
	err = st.WaitStates(wctx, "up", clusters...)
	cancel()
	if err != nil {
		return res, err
	}

	poll := min(max(fc.interval/100, time.Millisecond), 20*time.Millisecond)
	res.PollMS = float64(poll) / 1e6
	began := time.Now()
	deadline := began.Add(fc.budget)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range fc.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := demo.NewResolver(opt.DNS)
			both := spareIP() + " " + laneIP(i)
			if laneIP(i) < spareIP() {
				both = laneIP(i) + " " + spareIP()
			}
			// The worst case for one fault: fall checks, a full interval of
			// phase, and a margin for the slow machine.
			worst := time.Duration(fc.fall+1)*fc.interval + 2*time.Second
			for range fc.perLane {
				// A random phase against the check timer.
				time.Sleep(rand.N(fc.interval) + 20*time.Millisecond)
				if time.Until(deadline) < worst {
					return
				}
				t0 := time.Now()
				apps[i].SetFailing(true)
				ok := waitAnswer(r, laneName(i), spareIP(), poll, t0.Add(worst))
				t1 := time.Now()
				mu.Lock()
				if ok {
					res.clientRaw = append(res.clientRaw, ms(t1.Sub(t0)))
					res.injections = append(res.injections, injection{laneClust(i), t0})
				} else {
					res.Timeouts++
				}
				mu.Unlock()
				apps[i].SetFailing(false)
				if !waitAnswer(r, laneName(i), both, poll, time.Now().Add(time.Duration(fc.rise+2)*fc.interval+5*time.Second)) {
					return
				}
			}
		}()
	}
	wg.Wait()
	res.WallTime = time.Since(began).Round(100 * time.Millisecond).String()
	if fc.lanes*fc.perLane > len(res.clientRaw) && fc.budget > 0 {
		res.TimeBound = fmt.Sprintf("%d of %d planned faults ran within %s", len(res.clientRaw), fc.lanes*fc.perLane, fc.budget)
	}
	res.Faults = len(res.clientRaw)

	evs, err := demo.Events(opt.API)
	if err != nil {
		return res, err
	}
	for _, inj := range res.injections {
		for _, e := range evs {
			if e.Cluster == inj.cluster && e.To == "down" && !e.AppliedAt.Before(inj.at) {
				res.serverRaw = append(res.serverRaw, ms(e.AppliedAt.Sub(inj.at)))
				if !e.ObservedAt.IsZero() {
					res.detectRaw = append(res.detectRaw, ms(e.ObservedAt.Sub(inj.at)))
				}
				break
			}
		}
	}
	res.Client, res.Server, res.Detected = dist(res.clientRaw), dist(res.serverRaw), dist(res.detectRaw)
	return res, nil
}

// waitAnswer polls name every poll until it answers want, or until.
func waitAnswer(r *demo.Resolver, name, want string, poll time.Duration, until time.Time) bool {
	for time.Now().Before(until) {
		if r.Answer(name) == want {
			return true
		}
		time.Sleep(poll)
	}
	return false
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
