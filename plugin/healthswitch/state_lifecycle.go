package healthswitch

import "time"

// inherit copies the state of the engine this one replaces, cluster by
// cluster, for clusters that still exist.
func (e *engine) inherit(old *engine) {
	old.mu.Lock()
	defer old.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	e.epoch = old.epoch
	e.events = append([]Event(nil), old.events...)
	for sig, until := range old.adminSeen {
		e.adminSeen[sig] = until
	}
	for name, ocs := range old.clusters {
		cs := e.clusters[name]
		if cs == nil {
			continue
		}
		cs.decision = ocs.decision
		cs.disagree = false
		cs.downAt, cs.upAt = ocs.downAt, ocs.upAt
		cs.operatorState = ocs.operatorState
		if cs.sidecar != sigNone && ocs.sidecar != sigNone {
			cs.sidecar, cs.sidecarWhy = ocs.sidecar, ocs.sidecarWhy
			cs.report, cs.reportAt = ocs.report, ocs.reportAt
			setFence(cs, fenceOf(ocs))
			cs.staleDeadline = ocs.staleDeadline
		}
		if cs.probe != sigNone && ocs.probe != sigNone {
			cs.probe, cs.probeWhy = ocs.probe, ocs.probeWhy
		}
	}
	e.refreshSerial()
	for _, cs := range e.clusters {
		e.update(cs, cause{received: now})
	}
	e.publish(now)
}

// republish publishes the state as it is, e.g. when an instance starts.
func (e *engine) republish() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.publish(e.now())
}

// startBackground starts the engine's timers, probes and outputs.
func (e *engine) startBackground() {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for _, cs := range e.clusters {
		if !cs.staleDeadline.IsZero() {
			e.armStale(cs, cs.staleDeadline.Sub(now))
		}
	}
	if e.cfg.minSlowStart > 0 {
		e.ticker = time.NewTicker(max(e.cfg.minSlowStart/50, 10*time.Millisecond))
		go func() {
			for {
				select {
				case <-e.ticker.C:
					e.tick()
				case <-e.done:
					return
				}
			}
		}()
	}
	e.startProbes()
	e.onChange = append(e.onChange, e.notifyChange, e.publishEpoch)
}

// stopBackground stops timers, probes and outputs, and ends subscriptions.
// It may run more than once.
func (e *engine) stopBackground() {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return
	}
	e.stopped = true
	close(e.done)
	if e.ticker != nil {
		e.ticker.Stop()
	}
	for _, cs := range e.clusters {
		if cs.staleTimer != nil {
			cs.staleTimer.Stop()
		}
		if cs.hdTimer != nil {
			cs.hdTimer.Stop()
		}
	}
	for s := range e.subs {
		e.dropSub(s)
	}
	e.mu.Unlock()
	e.send.Close() // waits for the sender's loops: not under the lock
}
