package healthswitch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
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
			kick := make(chan struct{}, 1) // one pending wake: bursts coalesce
			go e.probeLoop(cs, pt, newProber(pu, e.cfg.timeout, e.cfg.interval), kick)
			if e.cfg.watch {
				go e.holdConnection(pu.dialAddr(), kick)
			}
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
// so that many targets do not fire together, and at once when kicked by its
// held connection (watch on). The next attempt starts only
// after the last one ended: at most one in flight. An attempt that panics
// counts as a failure and the loop goes on.
func (e *engine) probeLoop(cs *clusterState, pt *probeTarget, p probeFunc, kick <-chan struct{}) {
	timer := time.NewTimer(rand.N(e.cfg.interval))
	defer timer.Stop()
	for {
		select {
		case <-e.done:
			return
		case <-timer.C:
		case <-kick: // the held connection closed or came back: look now
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

// dialAddr is the host:port a held connection goes to.
func (pu probeURL) dialAddr() string {
	if _, _, err := net.SplitHostPort(pu.host); err == nil {
		return pu.host
	}
	host := strings.TrimSuffix(strings.TrimPrefix(pu.host, "["), "]")
	if pu.scheme == "https" {
		return net.JoinHostPort(host, "443")
	}
	return net.JoinHostPort(host, "80")
}

// holdConnection is the probe's event source (watch on): one idle TCP
// connection to the target, held open. When the far side closes or resets
// it (the serving process died, the balancer went away), and when a
// connection succeeds again after failures, it kicks the probe loop, which
// probes at once: the probe decides, the connection only wakes it. A
// server that closes idle connections costs an extra probe per reconnect,
// and reconnects back off from 5 ms up to the probe interval.
func (e *engine) holdConnection(addr string, kick chan<- struct{}) {
	wake := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	const minPause = 5 * time.Millisecond
	pause, failing := minPause, true // the first connection wakes the probe too
	buf := make([]byte, 512)
	for {
		conn, err := net.DialTimeout("tcp", addr, e.cfg.timeout)
		if err == nil {
			if failing {
				wake()
			}
			failing = false
			held := time.Now()
			closed := make(chan struct{})
			go func() {
				select {
				case <-e.done:
					conn.Close()
				case <-closed:
				}
			}()
			for err == nil {
				_, err = conn.Read(buf) // an idle server sends nothing: this waits for the close
			}
			close(closed)
			conn.Close()
			select {
			case <-e.done:
				return
			default:
			}
			wake()
			failing = true // and the next connection that holds wakes it again
			if time.Since(held) > e.cfg.interval {
				pause = minPause
			}
		} else {
			failing = true
		}
		select {
		case <-e.done:
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, max(e.cfg.interval, minPause))
	}
}
