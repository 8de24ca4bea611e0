package healthswitch

import (
	"fmt"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/redact"
	"github.com/healthswitch/healthswitch/report"
)

// applyReport takes a verified report, signed at signedAt, as the cluster's
// sidecar signal. It fails with ErrUnknownCluster or ErrReplay.
func (e *engine) applyReport(rep *report.Report, signedAt, received time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[rep.Cluster]
	switch {
	case cs == nil:
		return fmt.Errorf("%w %q", ErrUnknownCluster, rep.Cluster)
	case rep.BootID == cs.bootID && rep.Sequence <= cs.sequence:
		return fmt.Errorf("%w: sequence %d of boot %s is not above %d", ErrReplay, rep.Sequence, rep.BootID, cs.sequence)
	case rep.BootID != cs.bootID && cs.report != nil && signedAt.Before(cs.signedAt):
		// A new boot_id must also be newer than the last accepted report, or
		// an old boot's reports could be replayed within the skew window.
		return fmt.Errorf("%w: boot %s signed at %s, before the last accepted report", ErrReplay, rep.BootID, signedAt.Format(time.RFC3339Nano))
	}
	cs.bootID, cs.sequence, cs.signedAt = rep.BootID, rep.Sequence, signedAt
	cs.report, cs.reportAt, cs.signaled = rep, received, true
	reportAge.WithLabelValues(rep.Cluster).Set(received.Sub(rep.SentAt).Seconds())
	lastReportTime.WithLabelValues(rep.Cluster).Set(float64(received.UnixNano()) / 1e9)

	var observed time.Time
	if rep.Healthy {
		cs.sidecar, cs.sidecarWhy = sigUp, "healthy"
		observed = recovered(rep)
	} else {
		cs.sidecar = sigDown
		cs.sidecarWhy, observed = failing(rep)
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
		pt.lastError = redact.Text(err.Error())
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

// drain takes a cluster out of (or back into) service for an operator
// request signed at signedAt with sig (its decoded bytes), which is
// remembered for keep. It fails with ErrUnknownCluster, or ErrReplay when
// that request was applied already or was not signed after the last one
// applied to the cluster (its operator fence).
func (e *engine) drain(name string, drained bool, sig string, signedAt time.Time, keep time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[name]
	if cs == nil {
		return fmt.Errorf("%w %q", ErrUnknownCluster, name)
	}
	if !signedAt.After(cs.operatorFence) {
		return fmt.Errorf("%w: signed at %s, not after the last operator request applied to %s (%s)", ErrReplay,
			signedAt.UTC().Format(time.RFC3339Nano), name, cs.operatorFence.UTC().Format(time.RFC3339Nano))
	}
	if err := e.firstUse(sig, keep); err != nil {
		return err
	}
	cs.operatorFence = signedAt
	cs.drained = drained
	e.update(cs, cause{received: e.now()})
	return nil
}

// operatorFenceOf is when the last operator request applied to cluster was
// signed (zero: none yet); raiseOperatorFence restores it, e.g. from a store.
func (e *engine) operatorFenceOf(cluster string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cs := e.clusters[cluster]; cs != nil {
		return cs.operatorFence
	}
	return time.Time{}
}

// raiseOperatorFence raises a cluster's operator fence to at (never lowers it).
func (e *engine) raiseOperatorFence(cluster string, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cs := e.clusters[cluster]; cs != nil && at.After(cs.operatorFence) {
		cs.operatorFence = at
	}
}
