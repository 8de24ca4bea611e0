package healthswitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/healthswitch/healthswitch/internal/store"
)

// The glue between the plugin and internal/store: which store a server
// block uses (`state FILE` or `store etcd`), one open store per process
// handed across reloads, loading it before the DNS port answers, and how
// it shows in /v1/status, metrics and the log.

const (
	storeFile = "file"
	storeEtcd = "etcd"
	// defaultStoreTimeout bounds every etcd write and the load at start.
	defaultStoreTimeout = 2 * time.Second
)

// storeConfig is a parsed `state` or `store etcd` line.
type storeConfig struct {
	kind string // storeFile or storeEtcd
	path string // storeFile
	etcd store.EtcdOptions
	line int
}

// key identifies the store across server blocks and reloads: the same file,
// or the same etcd prefix and replica, is one open store.
func (s *storeConfig) key() string {
	if s.kind == storeFile {
		return "file " + s.path
	}
	o := s.etcd
	return fmt.Sprintf("etcd %s %s %s %s|%s|%s %s %s %s %s", strings.Join(o.Endpoints, ","), o.Prefix, o.Replica,
		o.CertFile, o.KeyFile, o.CAFile, o.Username, o.PasswordFile, o.OpTimeout, o.PresenceTTL)
}

// timeout bounds the load at start.
func (s *storeConfig) timeout() time.Duration {
	if s.kind == storeEtcd && s.etcd.OpTimeout > 0 {
		return s.etcd.OpTimeout
	}
	return defaultStoreTimeout
}

// sharedStore is one open store and the instances using it.
type sharedStore struct {
	cfg   *storeConfig
	st    store.Store
	users map[*HealthSwitch]func() // instance -> cancel of its subscription
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	replicas []store.Presence // etcd: as last listed by the monitor
	listedAt time.Time
}

// openStore opens (or takes over from the instance it replaces) the store
// of h's block, subscribes h's engine to it, and, when the store is newly
// opened, loads it into the engine, bounded: this runs in OnStartup, before
// CoreDNS opens the DNS port. fresh reports whether it was newly opened.
func (h *HealthSwitch) openStore() (fresh bool, err error) {
	sc := h.cfg.store
	if sc == nil {
		return false, nil
	}
	registry.Lock()
	ss := registry.stores[sc.key()]
	if ss == nil {
		st, err := newStore(sc)
		if st == nil {
			registry.Unlock()
			storeErrors.WithLabelValues("open").Inc()
			return false, fmt.Errorf("line %d: %w", sc.line, err)
		}
		ss = &sharedStore{cfg: sc, st: st, users: map[*HealthSwitch]func(){}, stop: make(chan struct{}), done: make(chan struct{})}
		registry.stores[sc.key()] = ss
		fresh = true
		go ss.monitor()
	}
	h.engine.attachStore(ss.st, storeReplicaName(sc), sc.timeout())
	ss.users[h] = ss.st.Subscribe(h.engine.applyChange)
	registry.Unlock()
	return fresh, nil
}

// newStore opens the store; a corrupt state file still gives a store.
func newStore(sc *storeConfig) (store.Store, error) {
	logger := slog.New(clogHandler{})
	if sc.kind == storeFile {
		st, err := store.OpenFile(sc.path, store.FileOptions{Logger: logger})
		if errors.Is(err, store.ErrCorrupt) {
			corruptStateFiles.Inc()
			log.Errorf("state %s: %v", sc.path, err)
			err = nil
		}
		if st == nil {
			return nil, err
		}
		return st, nil
	}
	o := sc.etcd
	o.Logger = logger
	st, err := store.NewEtcd(o)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func storeReplicaName(sc *storeConfig) string {
	if sc.kind == storeEtcd {
		return sc.etcd.Replica
	}
	return ""
}

// loadStore loads a newly opened store into the engine, bounded: etcd
// unreachable at start means starting from what is in memory.
func (h *HealthSwitch) loadStore() {
	sc := h.cfg.store
	ss := h.sharedStore()
	ctx, cancel := context.WithTimeout(context.Background(), sc.timeout())
	defer cancel()
	start := time.Now()
	snap, err := ss.st.Load(ctx)
	if err != nil {
		storeErrors.WithLabelValues("load").Inc()
		log.Errorf("store %s: not loaded within %s, starting from the state in memory (%v); it is applied when the store answers", sc.kind, sc.timeout(), err)
	}
	if snap == nil {
		snap = &store.Snapshot{}
	}
	n := h.engine.restore(snap)
	log.Infof("store %s: loaded %d cluster(s) in %s before answering", sc.kind, n, time.Since(start).Round(time.Microsecond))
}

func (h *HealthSwitch) sharedStore() *sharedStore {
	if h.cfg.store == nil {
		return nil
	}
	registry.Lock()
	defer registry.Unlock()
	return registry.stores[h.cfg.store.key()]
}

// startStore runs in start, before the state is taken over or loaded:
// the engine subscribes first, so nothing falls between load and watch.
// finish runs after the handover: it loads a newly opened store, or applies
// what was heard during the handover.
func (h *HealthSwitch) startStore() (finish func(), err error) {
	fresh, err := h.openStore()
	if err != nil || h.cfg.store == nil {
		return func() {}, err
	}
	load := h.engine.inheritStore
	if fresh {
		load = h.loadStore
	}
	return func() {
		load()
		h.engine.publishEpoch(Event{Epoch: h.engine.snap.Load().epoch})
	}, nil
}

// releaseStore runs in stop: the last instance using a store closes it.
func (h *HealthSwitch) releaseStore() {
	if h.cfg.store == nil {
		return
	}
	registry.Lock()
	ss := registry.stores[h.cfg.store.key()]
	if ss == nil {
		registry.Unlock()
		return
	}
	if cancel, ok := ss.users[h]; ok {
		cancel()
		delete(ss.users, h)
	}
	last := len(ss.users) == 0
	if last {
		delete(registry.stores, h.cfg.store.key())
	}
	registry.Unlock()
	if last {
		close(ss.stop)
		<-ss.done
		if err := ss.st.Close(); err != nil {
			storeErrors.WithLabelValues("close").Inc()
			log.Errorf("store %s: closing: %v", ss.cfg.kind, err)
		}
	}
}

// monitor keeps the store's metrics current, logs a file store's write
// failures once per change, and lists etcd's replicas for /v1/status (so
// status never waits on etcd).
func (ss *sharedStore) monitor() {
	defer close(ss.done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var last store.Status
	for n := 0; ; n++ {
		st := ss.st.Status()
		v := 0.0
		if st.Connected {
			v = 1
		}
		storeConnected.WithLabelValues(st.Mode).Set(v)
		if st.Relists > last.Relists {
			storeRelists.Add(float64(st.Relists - last.Relists))
		}
		if st.LastError != "" && st.LastError != last.LastError && st.Mode == storeFile {
			storeErrors.WithLabelValues("write").Inc()
		}
		last = st
		if es, ok := ss.st.(*store.EtcdStore); ok && st.Connected && n%2 == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			reps, err := es.Replicas(ctx)
			cancel()
			if err == nil {
				ss.mu.Lock()
				ss.replicas, ss.listedAt = reps, time.Now()
				ss.mu.Unlock()
				storeReplicas.Set(float64(len(reps)))
			}
		}
		select {
		case <-ss.stop:
			return
		case <-t.C:
		}
	}
}

// publishEpoch publishes the replica's answer epoch in etcd's presence/.
func (e *engine) publishEpoch(ev Event) {
	if es, ok := e.st.(*store.EtcdStore); ok {
		es.SetEpoch(ev.Epoch)
	}
}

// storeStatus is the `store` object of /v1/status.
type storeStatus struct {
	Kind string `json:"kind"`
	store.Status
	// Replicas present in etcd, with the epoch of the answers each serves.
	Replicas []store.Presence `json:"replicas,omitempty"`
	// ReplicasAt is when Replicas was listed.
	ReplicasAt time.Time `json:"replicas_at,omitzero"`
	// Shared is what the store keeps; PerReplica what each replica decides
	// alone (its active probes, from its own vantage point).
	Shared     []string `json:"shared"`
	PerReplica []string `json:"per_replica"`
}

func (h *HealthSwitch) storeStatus() *storeStatus {
	ss := h.sharedStore()
	if ss == nil {
		return nil
	}
	st := &storeStatus{Kind: ss.cfg.kind, Status: ss.st.Status(),
		Shared: []string{"drains", "report fences", "operator fences", "sidecar signals"}, PerReplica: []string{"probes"}}
	ss.mu.Lock()
	st.Replicas, st.ReplicasAt = ss.replicas, ss.listedAt
	ss.mu.Unlock()
	return st
}

// tableSerial is the SOA serial a name table was built with.
func tableSerial(t *nameTable) uint32 {
	for _, zr := range t.zones {
		return zr.soa.Serial
	}
	return 0
}

// storeFailed counts and logs a store operation that failed; the engine
// carries on from memory.
func storeFailed(op, cluster string, err error) {
	storeErrors.WithLabelValues(op).Inc()
	log.Warningf("store: %s for %s failed, applied here only: %v", op, cluster, err)
}

// clogHandler writes the store's structured log lines to CoreDNS's log.
type clogHandler struct{ attrs []slog.Attr }

func (clogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h clogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true }
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	switch {
	case r.Level >= slog.LevelError:
		log.Error(b.String())
	case r.Level >= slog.LevelWarn:
		log.Warning(b.String())
	default:
		log.Info(b.String())
	}
	return nil
}

func (h clogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return clogHandler{attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h clogHandler) WithGroup(string) slog.Handler { return h }
