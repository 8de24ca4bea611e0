package healthswitch

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/healthswitch/healthswitch/internal/sender"
	"github.com/healthswitch/healthswitch/internal/store"
	"github.com/healthswitch/healthswitch/report"
)

// The engine owns cluster state. Only the files state*.go take its lock;
// everything else calls its methods, which answer with plain errors. The
// HTTP mapping of these errors lives in the handlers (push.go).
var (
	// ErrUnknownCluster: the cluster is not in this server's config.
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrReplay: a report or operator request that was applied already, or
	// is older than the last one applied.
	ErrReplay = errors.New("replay")
)

// State is a cluster's state as answered over DNS.
type State string

// Cluster states. Only up clusters are answered (unknown ones too, unless
// `unknown down`).
const (
	StateUnknown State = "unknown"
	StateUp      State = "up"
	StateDown    State = "down"
	StateDrained State = "drained"
)

// signal is one source's opinion of a cluster.
type signal string

const (
	sigNone    signal = "none" // this source is not configured for the cluster
	sigUnknown signal = "unknown"
	sigUp      signal = "up"
	sigDown    signal = "down"
	sigStale   signal = "stale" // sidecar only: no valid report for `stale`
)

// Event is one state transition, as shown by /v1/events.
type Event struct {
	Cluster    string    `json:"cluster"`
	From       State     `json:"from"`
	To         State     `json:"to"`
	Reason     string    `json:"reason"`
	Epoch      uint64    `json:"epoch"`
	ObservedAt time.Time `json:"observed_at,omitzero"` // in the cluster, by the sidecar or probe
	ReceivedAt time.Time `json:"received_at,omitzero"` // by this server
	AppliedAt  time.Time `json:"applied_at"`           // the new answers are served from here on
}

const maxEvents = 256

// clusterState is everything known about one cluster, by concern. Guarded
// by engine.mu.
type clusterState struct {
	cfg *clusterConfig
	decision
	sidecarSignal
	probeSignal
	recovery
	operatorState // state_store.go
}

// decision is what the engine made of the signals: the output.
type decision struct {
	state    State
	since    time.Time
	reason   string
	drained  bool // by the operator
	signaled bool // had a first signal of any kind (for ready)
	disagree bool // sidecar and probe disagree now
}

// sidecarSignal is the pushed signal and its replay fence.
type sidecarSignal struct {
	sidecar       signal
	sidecarWhy    string
	report        *report.Report
	reportAt      time.Time // received
	bootID        string
	sequence      uint64
	signedAt      time.Time // signature timestamp of the last accepted report
	staleTimer    *time.Timer
	staleDeadline time.Time
}

// probeSignal is the active probes' signal.
type probeSignal struct {
	probe    signal
	probeWhy string
	probes   []*probeTarget
}

// recovery times holddown and slow start.
type recovery struct {
	downAt  time.Time // last transition away from up: holddown counts from here
	upAt    time.Time // last transition to up: slow start counts from here
	hdTimer *time.Timer
}

// cause describes what made the engine look at a cluster again.
type cause struct {
	observed time.Time
	received time.Time
}

// engine owns cluster state and publishes answer snapshots.
type engine struct {
	cfg   *config
	now   func() time.Time
	table *nameTable

	snap atomic.Pointer[snapshot]

	mu          sync.Mutex
	started     time.Time
	clusters    map[string]*clusterState
	epoch       uint64
	events      []Event
	stopped     bool
	ramping     bool
	done        chan struct{} // closed by stopBackground
	ticker      *time.Ticker
	send        *sender.Sender       // notify, peers and hooks; its loops start with the first message
	adminSeen   map[string]time.Time // signatures of applied operator requests, until they expire
	subs        map[*subscription]struct{}
	onChange    []func(ev Event) // called with mu held; must not block
	persistence                  // state_store.go
}

func newEngine(cfg *config) *engine {
	e := &engine{cfg: cfg, now: time.Now, table: newNameTable(cfg, zoneSerial(cfg, 0)), clusters: map[string]*clusterState{},
		adminSeen: map[string]time.Time{}, subs: map[*subscription]struct{}{}, done: make(chan struct{}), send: newSender()}
	now := e.now()
	for _, cl := range cfg.clusters {
		cs := &clusterState{cfg: cl, decision: decision{state: StateUnknown, since: now, reason: "no signal yet"}}
		cs.sidecar, cs.probe = sigNone, sigNone
		if cl.key != nil {
			cs.sidecar = sigUnknown
		}
		if len(cl.probes) > 0 {
			cs.probe = sigUnknown
		}
		e.clusters[cl.name] = cs
	}
	e.publish(now)
	return e
}

// publish builds and swaps in a new snapshot. Called with mu held (or before
// the engine is shared).
func (e *engine) publish(now time.Time) {
	e.epoch++
	views := make(map[string]clusterView, len(e.clusters))
	e.ramping = false
	for name, cs := range e.clusters {
		serving := cs.state == StateUp || (cs.state == StateUnknown && e.cfg.unknownUp)
		// The ramp is timed per cluster; each name weighs it by its own
		// slow_start (clusterView.share), up to the longest.
		upFor := time.Duration(-1)
		if serving && !cs.upAt.IsZero() {
			if age := now.Sub(cs.upAt); age < e.cfg.maxSlowStart {
				upFor, e.ramping = age, true
			}
		}
		views[name] = clusterView{cfg: cs.cfg, serving: serving, upFor: upFor}
	}
	e.snap.Store(buildSnapshot(e.cfg, e.epoch, views, e.table))
	if !e.started.IsZero() {
		// A new instance being set up on reload must not overwrite the
		// epoch of the one still serving.
		snapshotEpoch.Set(float64(e.epoch))
	}
}

// minShare is where slow start begins: a recovered cluster gets this
// fraction of its answers at once, then a linear ramp to all of them.
const minShare = 0.1

// evaluate combines the signals of a cluster per `detect`.
func (e *engine) evaluate(cs *clusterState) (State, string) {
	if cs.drained {
		return StateDrained, "drained by operator"
	}
	if cs.heldDown != "" {
		return StateDown, cs.heldDown
	}
	side, probe := cs.sidecar, cs.probe
	switch e.cfg.detect {
	case detectSidecar:
		switch side {
		case sigUp:
			return StateUp, "sidecar: healthy"
		case sigDown, sigStale:
			return StateDown, "sidecar: " + cs.sidecarWhy
		}
		return StateUnknown, "no report yet"
	case detectProbe:
		return probeOnly(cs)
	}
	// detect both: either signal can take the cluster down.
	switch {
	case side == sigDown:
		return StateDown, "sidecar: " + cs.sidecarWhy
	case probe == sigDown:
		return StateDown, "probe: " + cs.probeWhy
	case side == sigStale && probe == sigNone:
		return StateDown, "sidecar: " + cs.sidecarWhy + ", and no probe to defer to"
	case side == sigStale:
		// A stale sidecar defers to the probe.
		if st, why := probeOnly(cs); st != StateUnknown {
			return st, why + " (sidecar stale)"
		}
		return StateUnknown, "sidecar stale, probe not yet decided"
	case side == sigUp && probe == sigUp:
		return StateUp, "sidecar: healthy; probe: " + cs.probeWhy
	case side == sigUp:
		return StateUp, "sidecar: healthy"
	case probe == sigUp:
		return StateUp, "probe: " + cs.probeWhy
	}
	return StateUnknown, "no signal yet"
}

func probeOnly(cs *clusterState) (State, string) {
	switch cs.probe {
	case sigUp:
		return StateUp, "probe: " + cs.probeWhy
	case sigDown:
		return StateDown, "probe: " + cs.probeWhy
	}
	return StateUnknown, "probe not yet decided"
}

// update is the one place a cluster changes state: it compares old and new,
// and only on a real transition records, counts, logs, republishes and tells
// the subscribers. Called with mu held.
func (e *engine) update(cs *clusterState, c cause) {
	if e.stopped {
		return
	}
	now := e.now()
	next, why := e.evaluate(cs)
	if next == StateUp && cs.state != StateUp && e.cfg.holddown > 0 && !cs.downAt.IsZero() {
		if until := cs.downAt.Add(e.cfg.holddown); now.Before(until) {
			e.armHolddown(cs, until.Sub(now))
			next, why = cs.state, fmt.Sprintf("holddown until %s; %s", until.Format(time.RFC3339Nano), why)
		}
	}
	if next == cs.state {
		cs.reason = why
		return
	}
	prev := cs.state
	cs.state, cs.since, cs.reason = next, now, why
	if next == StateDown {
		cs.downAt = now
	}
	if next == StateUp {
		cs.upAt = now
		if prev == StateUnknown {
			cs.upAt = time.Time{} // nothing to ramp back from
		}
	}
	e.publish(now)
	ev := Event{Cluster: cs.cfg.name, From: prev, To: next, Reason: why, Epoch: e.epoch,
		ObservedAt: c.observed, ReceivedAt: c.received, AppliedAt: e.now()}
	e.record(ev)
	for _, fn := range e.onChange {
		fn(ev)
	}
	e.fanOut(ev)
}

func (e *engine) record(ev Event) {
	if len(e.events) == maxEvents {
		copy(e.events, e.events[1:])
		e.events = e.events[:maxEvents-1]
	}
	e.events = append(e.events, ev)
	log.Infof("cluster %s: %s -> %s (%s), epoch %d", ev.Cluster, ev.From, ev.To, ev.Reason, ev.Epoch)
	transitions.WithLabelValues(ev.Cluster, string(ev.To)).Inc()
	for _, s := range []State{StateUnknown, StateUp, StateDown, StateDrained} {
		v := 0.0
		if s == ev.To {
			v = 1
		}
		clusterStateGauge.WithLabelValues(ev.Cluster, string(s)).Set(v)
	}
	if !ev.ReceivedAt.IsZero() {
		receivedToApplied.WithLabelValues(ev.Cluster).Observe(ev.AppliedAt.Sub(ev.ReceivedAt).Seconds())
	}
	if !ev.ObservedAt.IsZero() {
		observedToApplied.WithLabelValues(ev.Cluster).Observe(max(0, ev.AppliedAt.Sub(ev.ObservedAt).Seconds()))
	}
}

func (e *engine) armHolddown(cs *clusterState, d time.Duration) {
	if cs.hdTimer != nil {
		cs.hdTimer.Stop()
	}
	cs.hdTimer = time.AfterFunc(d+time.Millisecond, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.update(cs, cause{})
	})
}

// setDrained takes a cluster out of (or back into) service by hand.
func (e *engine) setDrained(name string, drained bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[name]
	if cs == nil {
		return fmt.Errorf("%w %q", ErrUnknownCluster, name)
	}
	e.applyDrain(cs, store.Drain{Drained: drained, At: e.now()}, cause{received: e.now()})
	return nil
}

// tick republishes while slow start ramps a cluster in.
func (e *engine) tick() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ramping && !e.stopped {
		e.publish(e.now())
	}
}

// ready reports whether every cluster has had a first signal, or the wait is over.
func (e *engine) ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.now().Sub(e.started) >= e.cfg.readyWait {
		return true
	}
	for _, cs := range e.clusters {
		if !cs.signaled && (cs.sidecar != sigNone || cs.probe != sigNone) {
			return false
		}
	}
	return true
}

// markStarted records when the instance started serving (ready_timeout
// counts from here).
func (e *engine) markStarted(at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.started = at
}
