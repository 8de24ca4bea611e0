package healthswitch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/prober"
	"github.com/healthswitch/healthswitch/internal/redact"
)

// probeURL is a `probe` URL as parsed once in setup.
type probeURL struct {
	raw    string
	scheme string // http, https or tcp
	host   string // host:port, for tcp
}

// probeTarget is one active probe of a cluster's ingress. Its fields past
// the config are guarded by engine.mu.
type probeTarget struct {
	url     string // as shown: redacted
	counter *hysteresis.Counter

	lastOK    bool
	lastAt    time.Time
	lastRTT   time.Duration
	lastError string
}

// startProbes starts one loop per probe target. Called with mu held.
func (e *engine) startProbes() {
	for _, cs := range e.clusters {
		cs.probes = cs.probes[:0]
		for _, pu := range cs.cfg.probes {
			pt := &probeTarget{url: redact.Text(pu.raw), counter: hysteresis.New(e.cfg.fall, e.cfg.rise)}
			cs.probes = append(cs.probes, pt)
			go e.probeLoop(cs, pt, newProber(pu, e.cfg.timeout, e.cfg.interval))
		}
	}
}

// probeFunc runs one attempt; every attempt has its own timeout.
type probeFunc func(ctx context.Context) error

// probeUA is the User-Agent of the plugin's HTTP probes.
var probeUA = prober.UserAgent("", "plugin")

// newProber makes the attempt of one target with the probers the sidecar
// uses too (internal/prober): a TCP connect, or an HTTP GET healthy on 2xx.
func newProber(pu probeURL, timeout, interval time.Duration) probeFunc {
	if pu.scheme == "tcp" {
		return func(ctx context.Context) error { return prober.TCP(ctx, pu.host) }
	}
	client := prober.NewClient(timeout, max(2*interval, 30*time.Second), false)
	return func(ctx context.Context) error {
		resp, err := prober.HTTP(ctx, client, prober.Request{URL: pu.raw, UserAgent: probeUA})
		if err != nil {
			return fmt.Errorf("http get: %w", err)
		}
		if !resp.Healthy() {
			return fmt.Errorf("http status %d", resp.Status)
		}
		return nil
	}
}

// probeLoop probes one target every interval, starting after a random delay
// so that many targets do not fire together. The next attempt starts only
// after the last one ended: at most one in flight. An attempt that panics
// counts as a failure and the loop goes on.
func (e *engine) probeLoop(cs *clusterState, pt *probeTarget, p probeFunc) {
	timer := time.NewTimer(rand.N(e.cfg.interval))
	defer timer.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-timer.C:
		}
		start := time.Now()
		e.probeOnce(cs, pt, p)
		timer.Reset(max(0, e.cfg.interval-time.Since(start)))
	}
}

// probeOnce runs one attempt and feeds its result to the cluster.
func (e *engine) probeOnce(cs *clusterState, pt *probeTarget, p probeFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.timeout)
	start := time.Now()
	err := safeProbe(ctx, p)
	rtt := time.Since(start)
	cancel()
	result := "ok"
	if err != nil {
		result = "fail"
	}
	probeDuration.WithLabelValues(cs.cfg.name, result).Observe(rtt.Seconds())
	e.applyProbe(cs, pt, err, start, rtt)
}

// safeProbe runs p, turning a panic into a failed attempt.
func safeProbe(ctx context.Context, p probeFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Errorf("probe panicked: %v", r)
			err = fmt.Errorf("probe panicked: %v", r)
		}
	}()
	return p(ctx)
}
