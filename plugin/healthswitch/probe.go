package healthswitch

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
)

// probeTarget is one active probe of a cluster's ingress. Its fields past
// the config are guarded by engine.mu.
type probeTarget struct {
	url     string
	scheme  string
	host    string // host:port for tcp
	counter *hysteresis.Counter

	lastOK    bool
	lastAt    time.Time
	lastRTT   time.Duration
	lastError string
}

func newProbeTarget(raw string, fall, rise int) *probeTarget {
	u, _ := url.Parse(raw) // validated by parse
	return &probeTarget{url: raw, scheme: u.Scheme, host: u.Host, counter: hysteresis.New(fall, rise)}
}

// startProbes starts one loop per probe target. Called with mu held.
func (e *engine) startProbes() {
	for _, cs := range e.clusters {
		cs.probes = cs.probes[:0]
		for _, raw := range cs.cfg.probes {
			pt := newProbeTarget(raw, e.cfg.fall, e.cfg.rise)
			cs.probes = append(cs.probes, pt)
			go e.probeLoop(cs, pt, newProber(pt, e.cfg.timeout))
		}
	}
}

// prober runs one attempt; every attempt has its own timeout.
type prober func(ctx context.Context) error

func newProber(pt *probeTarget, timeout time.Duration) prober {
	if pt.scheme == "tcp" {
		d := net.Dialer{}
		return func(ctx context.Context) error {
			conn, err := d.DialContext(ctx, "tcp", pt.host)
			if err != nil {
				return fmt.Errorf("tcp dial %s: %w", pt.host, err)
			}
			return conn.Close()
		}
	}
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, pt.url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "healthswitch-probe")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("http get: %w", err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("http status %d", resp.StatusCode)
		}
		return nil
	}
}

// probeLoop probes one target every interval, starting after a random delay
// so that many targets do not fire together. The next attempt starts only
// after the last one ended: at most one in flight.
func (e *engine) probeLoop(cs *clusterState, pt *probeTarget, p prober) {
	defer func() {
		if r := recover(); r != nil {
			log.Errorf("probe %s: panic: %v", pt.url, r)
		}
	}()
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
func (e *engine) probeOnce(cs *clusterState, pt *probeTarget, p prober) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.timeout)
	start := time.Now()
	err := p(ctx)
	rtt := time.Since(start)
	cancel()
	result := "ok"
	if err != nil {
		result = "fail"
	}
	probeDuration.WithLabelValues(cs.cfg.name, result).Observe(rtt.Seconds())

	e.mu.Lock()
	defer e.mu.Unlock()
	pt.lastOK, pt.lastAt, pt.lastRTT = err == nil, start, rtt
	pt.lastError = ""
	if err != nil {
		pt.lastError = err.Error()
	}
	if _, changed := pt.counter.Observe(err == nil); !changed {
		return
	}
	sig, why := combineProbes(cs.probes)
	if sig == cs.probe {
		return
	}
	cs.probe, cs.probeWhy, cs.signaled = sig, why, true
	e.noteDisagreement(cs)
	e.update(cs, cause{observed: start, received: start.Add(rtt)})
}

// combineProbes: a cluster's probe signal is down when any of its targets
// is down (each probes a path its traffic needs), up when all are up.
func combineProbes(targets []*probeTarget) (signal, string) {
	var down []string
	unknown := false
	for _, pt := range targets {
		switch pt.counter.State() {
		case hysteresis.Down:
			down = append(down, fmt.Sprintf("%s: %s", pt.url, pt.lastError))
		case hysteresis.Unknown:
			unknown = true
		}
	}
	switch {
	case len(down) > 0:
		return sigDown, strings.Join(down, "; ")
	case unknown:
		return sigUnknown, "not yet decided"
	}
	return sigUp, fmt.Sprintf("%d target(s) answering", len(targets))
}
