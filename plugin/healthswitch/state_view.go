package healthswitch

// view is a copy of the engine's state for /v1/status: the snapshot served
// and, in config order, every cluster.
type view struct {
	snap     *snapshot
	clusters []clusterStatus
}

// view copies the state under the lock; nothing of it is shared.
func (e *engine) view() view {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := view{snap: e.snap.Load()}
	for _, cl := range e.cfg.clusters {
		cs := e.clusters[cl.name]
		st := clusterStatus{Name: cl.name, State: cs.state, Since: cs.since, Reason: cs.reason, Drained: cs.drained,
			Sidecar: sidecarStatus{Signal: cs.sidecar, Reason: cs.sidecarWhy, LastReport: cs.reportAt, BootID: cs.bootID, Sequence: cs.sequence},
			Probe:   probeStatus{Signal: cs.probe, Reason: cs.probeWhy}}
		if cs.report != nil {
			st.Sidecar.Checks = cs.report.Checks
		}
		for _, pt := range cs.probes {
			st.Probe.Targets = append(st.Probe.Targets, targetStatus{URL: pt.url, State: pt.counter.State().String(),
				LastOK: pt.lastOK, LastAt: pt.lastAt, LastRTTMS: float64(pt.lastRTT.Microseconds()) / 1000, LastError: pt.lastError})
		}
		v.clusters = append(v.clusters, st)
	}
	return v
}

// eventsSince copies the recorded transitions after epoch since.
func (e *engine) eventsSince(since uint64) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	events := []Event{}
	for _, ev := range e.events {
		if ev.Epoch > since {
			events = append(events, ev)
		}
	}
	return events
}

// subscription is one observer of transitions.
type subscription struct {
	ch chan Event
}

// subscribe returns the transitions from now on, in order. The engine never
// waits for a subscriber: one that falls buf events behind is dropped, its
// channel closed (as it is when the engine stops, e.g. replaced by a
// reload). cancel ends the subscription; it may be called more than once.
func (e *engine) subscribe(buf int) (events <-chan Event, cancel func()) {
	s := &subscription{ch: make(chan Event, max(buf, 1))}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		close(s.ch)
		return s.ch, func() {}
	}
	e.subs[s] = struct{}{}
	return s.ch, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.dropSub(s)
	}
}

// fanOut hands ev to every subscriber without waiting. Called with mu held.
func (e *engine) fanOut(ev Event) {
	for s := range e.subs {
		select {
		case s.ch <- ev:
		default:
			log.Warningf("a transition subscriber fell %d events behind: dropped", cap(s.ch))
			e.dropSub(s)
		}
	}
}

// dropSub ends a subscription. Called with mu held.
func (e *engine) dropSub(s *subscription) {
	if _, ok := e.subs[s]; ok {
		delete(e.subs, s)
		close(s.ch)
	}
}

// eventsThen returns the recorded transitions after epoch after, and runs
// then under the same lock, so a reader that then starts following live
// transitions misses none and sees none twice. An after beyond the current
// epoch (an id from before this process started) returns every recorded
// transition; the epoch returned is the one the list starts after.
func (e *engine) eventsThen(after uint64, then func()) ([]Event, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	then()
	if after > e.epoch {
		after = 0
	}
	var out []Event
	for _, ev := range e.events {
		if ev.Epoch > after {
			out = append(out, ev)
		}
	}
	return out, after
}

// onTransition has fn called with every transition from now on, with the
// engine's lock held: fn must not block.
func (e *engine) onTransition(fn func(Event)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onChange = append(e.onChange, fn)
}
