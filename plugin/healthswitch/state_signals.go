package healthswitch

import (
	"fmt"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/store"
	"github.com/healthswitch/healthswitch/report"
)

// applyReport takes a verified report, signed at signedAt, as the cluster's
// sidecar signal. It fails with ErrUnknownCluster or ErrReplay. With a
// store, the fence moves there first (compare-and-swap), so of two replicas
// offered the same report only one accepts it.
func (e *engine) applyReport(rep *report.Report, signedAt, received time.Time) error {
	next := store.Fence{BootID: rep.BootID, Sequence: rep.Sequence, SignedAt: signedAt}
	prev, err := e.checkFence(rep.Cluster, next)
	if err != nil {
		return err
	}
	var observed time.Time
	why := "healthy"
	if rep.Healthy {
		observed = recovered(rep)
	} else {
		why, observed = failing(rep)
	}
	sig := store.Signal{Healthy: rep.Healthy, Reason: why, ObservedAt: observed, ReceivedAt: received, Replica: e.storeReplica()}
	if err := e.persistFence(rep.Cluster, prev, next, sig); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[rep.Cluster]
	if have := fenceOf(cs); !next.After(have) {
		return replayOf(next, have) // a concurrent copy got here first
	}
	setFence(cs, next)
	cs.report, cs.reportAt, cs.signaled, cs.heldDown = rep, received, true, ""
	reportAge.WithLabelValues(rep.Cluster).Set(received.Sub(rep.SentAt).Seconds())
	lastReportTime.WithLabelValues(rep.Cluster).Set(float64(received.UnixNano()) / 1e9)

	cs.sidecar, cs.sidecarWhy = sigDown, why
	if rep.Healthy {
		cs.sidecar = sigUp
	}
	e.armStale(cs, e.cfg.stale)
	e.noteDisagreement(cs)
	e.update(cs, cause{observed: observed, received: received})
	return nil
}

// failing summarizes the failed critical checks of a report, and when the
// earliest of them was observed.
func failing(rep *report.Report) (string, time.Time) {
	var parts []string
	observed := rep.SentAt
	for _, c := range rep.Checks {
		if c.Healthy || !c.Critical {
			continue
		}
		part := c.Name + " check failed"
		if c.Detail != "" {
			part = c.Name + ": " + c.Detail
		}
		parts = append(parts, part)
		if !c.ObservedAt.IsZero() && c.ObservedAt.Before(observed) {
			observed = c.ObservedAt
		}
	}
	if len(parts) == 0 {
		return "reported unhealthy", observed
	}
	return strings.Join(parts, "; "), observed
}

// recovered is when a healthy report's checks were last observed: the
// latest run of a critical check, which is the run that found the last
// failing one healthy again.
func recovered(rep *report.Report) time.Time {
	var observed time.Time
	for _, c := range rep.Checks {
		if c.Critical && c.ObservedAt.After(observed) && !c.ObservedAt.After(rep.SentAt) {
			observed = c.ObservedAt
		}
	}
	if observed.IsZero() {
		return rep.SentAt
	}
	return observed
}

// armStale (re)starts the countdown after which the sidecar's signal is
// stale. A timer, so the query path never checks ages. Called with mu held.
func (e *engine) armStale(cs *clusterState, d time.Duration) {
	cs.staleDeadline = e.now().Add(d)
	if cs.staleTimer != nil {
		cs.staleTimer.Reset(max(d, 0))
		return
	}
	cs.staleTimer = time.AfterFunc(max(d, 0), func() { e.expire(cs) })
}

func (e *engine) expire(cs *clusterState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || cs.sidecar == sigStale {
		return
	}
	now := e.now()
	if left := cs.staleDeadline.Sub(now); left > 0 {
		cs.staleTimer.Reset(left)
		return
	}
	cs.sidecar = sigStale
	cs.sidecarWhy = fmt.Sprintf("no valid report for %s", e.cfg.stale)
	e.update(cs, cause{observed: cs.staleDeadline, received: now})
}

// noteDisagreement counts the moments the two signals come to disagree.
// Called with mu held, after either signal changed.
func (e *engine) noteDisagreement(cs *clusterState) {
	dis := (cs.sidecar == sigUp && cs.probe == sigDown) || (cs.sidecar == sigDown && cs.probe == sigUp)
	if dis && !cs.disagree {
		signalDisagreements.WithLabelValues(cs.cfg.name).Inc()
	}
	cs.disagree = dis
}

// applyProbe feeds one probe attempt of a target to its cluster: err nil
// is a success. start and rtt time the attempt.
func (e *engine) applyProbe(cs *clusterState, pt *probeTarget, err error, start time.Time, rtt time.Duration) {
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
	if sig != sigUnknown {
		cs.heldDown = "" // a fresh verdict
	}
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

// firstUse remembers an operator request's signature (its decoded bytes)
// for as long as its timestamp is acceptable; it fails with ErrReplay when
// it was used already. Called with mu held.
func (e *engine) firstUse(sig string, keep time.Duration) error {
	now := e.now()
	for s, until := range e.adminSeen {
		if now.After(until) {
			delete(e.adminSeen, s)
		}
	}
	if _, seen := e.adminSeen[sig]; seen {
		return fmt.Errorf("%w: this signed request was already applied", ErrReplay)
	}
	e.adminSeen[sig] = now.Add(keep)
	return nil
}

// opRequest is a verified operator request: when it was signed, its
// signature in canonical form, and the reason it gives.
type opRequest struct {
	signedAt  time.Time
	signature string
	reason    string
}

// opFence is the fence of operator requests, in one place: a request must
// be signed later than the last one applied to the cluster, on this replica
// and, through the store (CASOpFence), on every replica and across
// restarts. Called with mu held.
func (e *engine) opFence(cs *clusterState, next store.OpFence) error {
	if !next.SignedAt.After(cs.opFence.SignedAt) {
		return fmt.Errorf("%w: an operator request for %s signed at %s was applied already, this one is not later",
			ErrReplay, cs.cfg.name, cs.opFence.SignedAt.Format(time.RFC3339Nano))
	}
	return nil
}

// drain takes a cluster out of (or back into) service for an operator
// request; its signature is remembered for keep. It fails with ErrReplay
// when that request was applied already or is not later than the last one
// applied to the cluster, or with ErrUnknownCluster.
func (e *engine) drain(name string, drained bool, req opRequest, keep time.Duration) error {
	next := store.OpFence{SignedAt: req.signedAt, Signature: req.signature}
	prev, err := e.checkOpFence(name, next, req.signature, keep)
	if err != nil {
		return err
	}
	d := store.Drain{Drained: drained, Reason: req.reason, At: req.signedAt, Replica: e.storeReplica()}
	if err := e.persistDrain(name, prev, next, d); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[name]
	if err := e.opFence(cs, next); err != nil {
		return err
	}
	cs.opFence = next
	e.applyDrain(cs, d, cause{received: e.now()})
	return nil
}

// operatorFenceOf is when the last operator request applied to cluster was
// signed (zero: none yet).
func (e *engine) operatorFenceOf(cluster string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cs := e.clusters[cluster]; cs != nil {
		return cs.opFence.SignedAt
	}
	return time.Time{}
}
