package healthswitch

import (
	"strings"
	"sync"
	"time"

	clog "github.com/coredns/coredns/plugin/pkg/log"
)

var log = clog.NewWithPlugin(pluginName)

// live maps a server block (its zones) to the engine serving it now, so that
// a reloaded instance takes over the state of the one it replaces: pushed
// signals, replay counters, drains and the epoch.
var live = struct {
	sync.Mutex
	m map[string]*engine
}{m: map[string]*engine{}}

func (h *HealthSwitch) key() string { return strings.Join(h.cfg.zones, " ") }

// start runs in OnStartup: take over state, bind, start timers.
func (h *HealthSwitch) start() error {
	live.Lock()
	prev := live.m[h.key()]
	live.Unlock()
	h.engine.mu.Lock()
	h.engine.started = h.engine.now()
	h.engine.mu.Unlock()
	if prev != nil && prev != h.engine {
		h.engine.inherit(prev)
	} else {
		h.engine.mu.Lock()
		h.engine.publish(h.engine.now())
		h.engine.mu.Unlock()
	}
	if err := h.startListener(); err != nil {
		return err
	}
	live.Lock()
	live.m[h.key()] = h.engine
	live.Unlock()
	h.engine.startBackground()
	return nil
}

// stop runs in OnShutdown; it may run more than once.
func (h *HealthSwitch) stop() error {
	h.once.Do(func() {
		h.engine.stopBackground()
		h.stopListener()
		live.Lock()
		if live.m[h.key()] == h.engine {
			delete(live.m, h.key())
		}
		live.Unlock()
	})
	return nil
}

// onRestart runs on the old instance before a reload. Nothing is released:
// the listener and the state are handed over in the new instance's start.
// Instances set up from here on belong to the new load.
func (h *HealthSwitch) onRestart() error {
	listeners.Lock()
	defer listeners.Unlock()
	if listeners.gen == h.gen {
		listeners.gen++
	}
	return nil
}

// onRestartFailed runs on the old instance when the new one failed: take
// back the listener and the live slot the new one may have claimed.
func (h *HealthSwitch) onRestartFailed() error {
	live.Lock()
	live.m[h.key()] = h.engine
	live.Unlock()
	return h.reclaimListener()
}

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
		cs.drained = ocs.drained
		cs.signaled = ocs.signaled
		cs.downAt, cs.upAt = ocs.downAt, ocs.upAt
		cs.state, cs.since, cs.reason = ocs.state, ocs.since, ocs.reason
		if cs.sidecar != sigNone && ocs.sidecar != sigNone {
			cs.sidecar, cs.sidecarWhy = ocs.sidecar, ocs.sidecarWhy
			cs.report, cs.reportAt = ocs.report, ocs.reportAt
			cs.bootID, cs.sequence = ocs.bootID, ocs.sequence
			cs.staleDeadline = ocs.staleDeadline
		}
		if cs.probe != sigNone && ocs.probe != sigNone {
			cs.probe, cs.probeWhy = ocs.probe, ocs.probeWhy
		}
	}
	for _, cs := range e.clusters {
		e.update(cs, cause{received: now})
	}
	e.publish(now)
}

// startBackground starts the engine's timers and probes.
func (e *engine) startBackground() {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for _, cs := range e.clusters {
		if !cs.staleDeadline.IsZero() {
			e.armStale(cs, cs.staleDeadline.Sub(now))
		}
	}
	if e.cfg.slowStart > 0 {
		e.ticker = time.NewTicker(max(e.cfg.slowStart/50, 10*time.Millisecond))
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
	e.startOutboxes()
}

func (e *engine) stopBackground() {
	e.mu.Lock()
	defer e.mu.Unlock()
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
}
