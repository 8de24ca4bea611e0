package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/healthswitch/healthswitch/report"
)

// stopBound is how long stopping (on SIGTERM or reload) may wait for checks
// and pushes in flight before giving up on them.
const stopBound = 2 * time.Second

// Sidecar runs the checks of one config, pushes reports and serves its own
// status. Reload swaps the config while boot_id and sequence carry on.
type Sidecar struct {
	log    *slog.Logger
	reg    *prometheus.Registry
	m      *metrics
	bootID string
	seq    atomic.Uint64
	dist   *distributor // receives notify; outlives reloads

	mu     sync.Mutex
	gen    *generation
	srv    *http.Server
	listen string
	addr   net.Addr
	runCtx context.Context
}

// generation is what one config runs: its check runners, its targets and
// the loop that builds reports.
type generation struct {
	s       *Sidecar
	cfg     *Config
	runners []*runner
	targets []*target
	changed chan struct{} // one slot: changes that arrive during a push coalesce

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New prepares a sidecar for cfg; Run starts it.
func New(cfg *Config, log *slog.Logger) *Sidecar {
	s := &Sidecar{log: log, reg: prometheus.NewRegistry(), bootID: newBootID()}
	s.m = newMetrics(s.reg, Version)
	s.gen = s.newGeneration(cfg, nil)
	s.dist = newDistributor(s)
	return s
}

func newBootID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// BootID is this process's random id, sent with every report.
func (s *Sidecar) BootID() string { return s.bootID }

// Addr is the address the status server listens on, once Run has bound it.
func (s *Sidecar) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

func (s *Sidecar) newGeneration(cfg *Config, old *generation) *generation {
	g := &generation{s: s, cfg: cfg, changed: make(chan struct{}, 1)}
	byName := map[string]*runner{}
	if old != nil {
		for _, r := range old.runners {
			byName[r.check.Name] = r
		}
	}
	for _, c := range cfg.Checks {
		r := newRunner(c, s.m, s.log, g.notify)
		if prev, ok := byName[c.Name]; ok && prev.check.kind == c.kind {
			r.inherit(prev)
		}
		g.runners = append(g.runners, r)
	}
	for _, u := range cfg.Targets() {
		g.targets = append(g.targets, newTarget(u, cfg.Key, s.m, s.log))
	}
	return g
}

func (g *generation) notify() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

func (g *generation) start(ctx context.Context, pushNow bool) {
	ctx, g.cancel = context.WithCancel(ctx)
	for _, t := range g.targets {
		g.done.Go(func() { guard(ctx, g.s.log, "push "+t.url, t.loop) })
	}
	for _, r := range g.runners {
		g.done.Go(func() { guard(ctx, g.s.log, "check "+r.check.Name, r.loop) })
	}
	if pushNow {
		g.notify()
	}
	g.done.Go(func() { guard(ctx, g.s.log, "report loop", g.reportLoop) })
}

// stop cancels the generation and waits, within stopBound, for its
// goroutines; then releases the checks' resources.
func (g *generation) stop() {
	g.cancel()
	done := make(chan struct{})
	go func() { g.done.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopBound):
		g.s.log.Warn("checks still running after stop", "waited", stopBound)
	}
	for _, c := range g.cfg.Checks {
		c.Close()
	}
}

// guard runs a background loop, restarting it after a panic (logged) until
// the context ends: one bad check must not take the sidecar down.
func guard(ctx context.Context, log *slog.Logger, what string, loop func(context.Context)) {
	for ctx.Err() == nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					log.Error("recovered from panic", "in", what, "panic", fmt.Sprint(p))
				}
			}()
			loop(ctx)
		}()
		if ctx.Err() == nil {
			select { // a loop that keeps panicking must not spin
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// reportLoop pushes at once on a change and every heartbeat otherwise.
func (g *generation) reportLoop(ctx context.Context) {
	hb := time.NewTimer(g.cfg.Heartbeat.Duration)
	defer hb.Stop()
	for {
		reason := "heartbeat"
		select {
		case <-ctx.Done():
			return
		case <-g.changed:
			reason = "change"
		case <-hb.C:
		}
		g.pushOnce(reason)
		hb.Reset(untilTick(g.cfg.Heartbeat.Duration, time.Now())) // at most a heartbeat after this report
	}
}

// pushOnce builds one report and hands it to every target's mailbox.
func (g *generation) pushOnce(reason string) {
	r := g.build()
	body, err := encodeBounded(r)
	if err != nil {
		g.s.log.Error("encoding report", "err", err)
		return
	}
	g.s.m.reports.WithLabelValues(reason).Inc()
	if r.Healthy {
		g.s.m.healthy.Set(1)
	} else {
		g.s.m.healthy.Set(0)
	}
	for _, t := range g.targets {
		t.offer(body)
	}
}

// encodeBounded encodes r; when it would pass the receivers' body limit
// (hundreds of checks with long details), the details are left out rather
// than the report being refused.
func encodeBounded(r report.Report) ([]byte, error) {
	body, err := r.Encode()
	if err != nil || len(body) <= report.MaxBodySize {
		return body, err
	}
	r.Checks = append([]report.Check(nil), r.Checks...)
	for i := range r.Checks {
		r.Checks[i].Detail = ""
	}
	if body, err = r.Encode(); err == nil && len(body) > report.MaxBodySize {
		err = fmt.Errorf("report of %d checks is %d bytes, over the %d-byte limit", len(r.Checks), len(body), report.MaxBodySize)
	}
	return body, err
}

// build makes the next report: healthy when every critical check is.
func (g *generation) build() report.Report {
	r := report.Report{
		Version:    report.Version,
		Cluster:    g.cfg.Cluster,
		BootID:     g.s.bootID,
		Sequence:   g.s.seq.Add(1),
		SentAt:     time.Now().UTC(),
		Healthy:    true,
		IntervalMS: g.cfg.Interval.Milliseconds(),
	}
	for _, run := range g.runners {
		c, _, _, _, _ := run.snapshot()
		if c.Critical && !c.Healthy {
			r.Healthy = false
		}
		r.Checks = append(r.Checks, c)
	}
	return r
}

// Run binds the status server, starts the checks and pushes, and blocks
// until ctx ends; then it stops everything within a bound.
func (s *Sidecar) Run(ctx context.Context) error {
	s.mu.Lock()
	ln, err := net.Listen("tcp", s.gen.cfg.Listen)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("listen: %w", err)
	}
	s.serve(ln, s.gen.cfg.Listen)
	s.runCtx = ctx
	s.schedule(s.gen.cfg.RealtimePriority)
	s.gen.start(ctx, false)
	s.log.Info("sidecar started", "cluster", s.gen.cfg.Cluster, "checks", len(s.gen.runners),
		"report_to", s.gen.cfg.shownTargets(), "listen", ln.Addr().String(), "boot_id", s.bootID, "version", Version)
	s.mu.Unlock()

	<-ctx.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.stop()
	sctx, cancel := context.WithTimeout(context.Background(), stopBound)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
	}
	s.log.Info("sidecar stopped")
	return nil
}

// schedule puts the process under realtime_priority prio (0: the normal
// policy). One that cannot be had leaves the sidecar at the normal policy,
// running: said in the log, in /status (scheduling) and in the metric
// realtime_priority, which is the priority in force.
func (s *Sidecar) schedule(prio int) {
	changed, err := setRealtime(prio)
	s.m.realtime.Set(float64(realtimeInForce()))
	switch {
	case !changed:
	case err != nil:
		s.log.Warn("running at the normal priority", "err", err)
	case prio != 0:
		s.log.Info("running at real-time priority", "policy", "SCHED_FIFO", "priority", prio)
	default:
		s.log.Info("running at the normal priority")
	}
}

// Reload switches to cfg. On an error (the new listen address cannot be
// bound) the old config keeps running. Checks of the same name and kind
// keep their state; the new config's report is pushed at once.
func (s *Sidecar) Reload(cfg *Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil || s.runCtx.Err() != nil {
		return errors.New("sidecar is not running")
	}
	var ln net.Listener
	if cfg.Listen != s.listen {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			s.m.reloads.WithLabelValues("error").Inc()
			return fmt.Errorf("listen: %w", err)
		}
	}
	old := s.gen
	old.stop()
	s.schedule(cfg.RealtimePriority)
	s.gen = s.newGeneration(cfg, old)
	s.forgetRemoved(old, s.gen)
	s.gen.start(s.runCtx, true)
	if ln != nil {
		prev := s.srv
		s.serve(ln, cfg.Listen)
		go prev.Close()
	}
	s.m.reloads.WithLabelValues("ok").Inc()
	s.log.Info("config reloaded", "checks", len(cfg.Checks), "report_to", cfg.shownTargets(), "listen", s.addr.String())
	return nil
}

func (s *Sidecar) forgetRemoved(old, cur *generation) {
	names, urls := map[string]bool{}, map[string]bool{}
	for _, r := range cur.runners {
		names[r.check.Name] = true
	}
	for _, t := range cur.targets {
		urls[t.url] = true
	}
	for _, r := range old.runners {
		if !names[r.check.Name] {
			s.m.forgetCheck(r.check.Name)
		}
	}
	for _, t := range old.targets {
		if !urls[t.url] {
			s.m.forgetTarget(t.url)
		}
	}
}

// ReloadFailed counts a reload whose config did not load.
func (s *Sidecar) ReloadFailed() { s.m.reloads.WithLabelValues("error").Inc() }

// current returns the running generation.
func (s *Sidecar) current() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

func (s *Sidecar) serve(ln net.Listener, listen string) {
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadTimeout:       5 * time.Second,
		ReadHeaderTimeout: 2 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.listen, s.addr = listen, ln.Addr()
	srv := s.srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("status server", "err", err)
		}
	}()
}
