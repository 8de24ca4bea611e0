package healthswitch

import (
	"strings"
	"sync"

	"github.com/coredns/caddy"
	clog "github.com/coredns/coredns/plugin/pkg/log"
)

var log = clog.NewWithPlugin(pluginName)

// registry is the one process-wide place a reload hands over through: the
// engine serving each server block, so a reloaded instance takes over the
// state of the one it replaces (pushed signals, replay counters, drains,
// the epoch); the push API listener bound to each address; and the
// instances started, so a failed reload can stop those of the failed load.
var registry = struct {
	sync.Mutex
	gen       uint64                     // bumped by every OnRestart: instances set up later belong to the new load
	engines   map[string]*engine         // by server block identity
	listeners map[string]*sharedListener // by listen address
	started   map[*HealthSwitch]bool     // instances whose start ran and whose stop did not yet
	stores    map[string]*sharedStore    // by store identity (persist.go): opened once, handed over
}{engines: map[string]*engine{}, listeners: map[string]*sharedListener{}, started: map[*HealthSwitch]bool{},
	stores: map[string]*sharedStore{}}

// blockIdentity names a server block across reloads: its keys (zones with
// their ports and transports), which no two blocks of a Corefile share. Two
// blocks serving the same zones on different ports are two blocks; the
// zones given to healthswitch do not identify the block.
func blockIdentity(c *caddy.Controller) string {
	return strings.Join(c.ServerBlockKeys, " ")
}

func currentGen() uint64 {
	registry.Lock()
	defer registry.Unlock()
	return registry.gen
}

// start runs in OnStartup: take over state, bind, start timers.
func (h *HealthSwitch) start() error {
	registry.Lock()
	prev := registry.engines[h.cfg.block]
	registry.Unlock()
	h.engine.markStarted(h.engine.now())
	finishStore, err := h.startStore()
	if err != nil {
		return err
	}
	if prev != nil && prev != h.engine {
		h.engine.inherit(prev)
	} else {
		h.engine.republish()
	}
	finishStore()
	if err := h.startListener(); err != nil {
		return err
	}
	registry.Lock()
	registry.engines[h.cfg.block] = h.engine
	registry.Unlock()
	h.engine.startBackground()
	return nil
}

// stop runs in OnShutdown; it may run more than once.
func (h *HealthSwitch) stop() error {
	h.once.Do(func() {
		h.engine.stopBackground()
		h.stopListener()
		h.releaseStore()
		registry.Lock()
		if registry.engines[h.cfg.block] == h.engine {
			delete(registry.engines, h.cfg.block)
		}
		registry.Unlock()
	})
	return nil
}

// onRestart runs on the old instance before a reload. Nothing is released:
// the listener and the state are handed over in the new instance's start.
// Instances set up from here on belong to the new load.
func (h *HealthSwitch) onRestart() error {
	registry.Lock()
	defer registry.Unlock()
	if registry.gen == h.gen {
		registry.gen++
	}
	return nil
}

// onRestartFailed runs on the old instance when the new one failed: every
// instance of the failed load that had started is stopped (its own shutdown
// hooks never run), and this one takes back its block and its listener.
func (h *HealthSwitch) onRestartFailed() error {
	registry.Lock()
	var failed []*HealthSwitch
	for o := range registry.started {
		if o.gen > h.gen {
			failed = append(failed, o)
		}
	}
	registry.Unlock()
	for _, o := range failed {
		o.stop()
	}
	registry.Lock()
	defer registry.Unlock()
	registry.engines[h.cfg.block] = h.engine
	if h.listener != nil {
		h.listener.current.Store(h)
	}
	return nil
}
