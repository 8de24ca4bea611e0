package healthswitch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/healthswitch/healthswitch/internal/store"
)

// What outlives the process (`state FILE`) or is shared by replicas
// (`store etcd`): the engine's side of it. The glue that opens the store and
// shows it lives in persist.go; everything here takes the engine's lock.

// operatorState is what an operator did to a cluster, and the fence of
// their requests. Guarded by engine.mu.
type operatorState struct {
	drainReason string
	drainAt     time.Time
	opFence     store.OpFence
	// heldDown is set when the cluster was down before this process
	// started: it stays down until a fresh signal (a report, a probe
	// verdict, or another replica's report) says otherwise.
	heldDown string
}

// persistence is the engine's link to its store. Guarded by engine.mu,
// except st and replica, which are set before the engine is shared.
type persistence struct {
	st       store.Store // nil: nothing outlives the process
	replica  string
	timeout  time.Duration
	restored bool           // the snapshot (or the replaced engine) is applied: changes apply directly
	pending  []store.Change // changes heard before that
	baseRev  int64          // changes at or below this revision are in the snapshot
	serial   uint32         // the configuration's SOA serial, before the drains are mixed in
	drainGen uint32         // generation of the drains the name table was built with
}

func fenceOf(cs *clusterState) store.Fence {
	return store.Fence{BootID: cs.bootID, Sequence: cs.sequence, SignedAt: cs.signedAt}
}

func setFence(cs *clusterState, f store.Fence) {
	cs.bootID, cs.sequence, cs.signedAt = f.BootID, f.Sequence, f.SignedAt
}

// replayOf says why next may not follow have.
func replayOf(next, have store.Fence) error {
	if next.BootID == have.BootID {
		return fmt.Errorf("%w: sequence %d of boot %s is not above %d", ErrReplay, next.Sequence, next.BootID, have.Sequence)
	}
	return fmt.Errorf("%w: boot %s signed at %s, before the last accepted report", ErrReplay, next.BootID, next.SignedAt.Format(time.RFC3339Nano))
}

// checkFence returns the cluster's fence, or why next may not follow it.
func (e *engine) checkFence(cluster string, next store.Fence) (store.Fence, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[cluster]
	if cs == nil {
		return store.Fence{}, fmt.Errorf("%w %q", ErrUnknownCluster, cluster)
	}
	have := fenceOf(cs)
	if !next.After(have) {
		return have, replayOf(next, have)
	}
	return have, nil
}

// errStoreAway: etcd is known to be unreachable, so a write is not tried:
// it would only hold the request up for the store's timeout.
var errStoreAway = errors.New("store etcd unreachable: applied on this replica only")

// storeAway reports whether the store is etcd and known to be unreachable.
func (e *engine) storeAway() bool {
	es, ok := e.st.(*store.EtcdStore)
	return ok && !es.Connected()
}

func (e *engine) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), max(e.timeout, time.Second)+time.Second)
}

// persistFence moves the stored fence from prev to next with the signal.
// It fails only with ErrReplay (another replica, or an earlier copy, got
// there first); a store that cannot be reached is counted and logged, and
// the report applies locally anyway.
func (e *engine) persistFence(cluster string, prev, next store.Fence, sig store.Signal) error {
	if e.st == nil {
		return nil
	}
	if e.storeAway() {
		storeFailed("cas_fence", cluster, errStoreAway)
		return nil
	}
	ctx, cancel := e.storeCtx()
	defer cancel()
	err := e.st.CASFence(ctx, cluster, prev, next, &sig)
	var re *store.ReplayError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re):
		if re.Fence != nil {
			e.mu.Lock()
			if cs := e.clusters[cluster]; cs != nil && re.Fence.After(fenceOf(cs)) {
				setFence(cs, *re.Fence)
			}
			e.mu.Unlock()
		}
		return fmt.Errorf("%w: %v", ErrReplay, err)
	}
	storeFailed("cas_fence", cluster, err)
	return nil
}

// persistDrain moves the stored operator fence from prev to next with the
// drain, and waits until it is durable when the store is a file: an
// answered drain is never lost. Errors as persistFence.
func (e *engine) persistDrain(cluster string, prev, next store.OpFence, d store.Drain) error {
	if e.st == nil {
		return nil
	}
	if e.storeAway() {
		storeFailed("cas_op_fence", cluster, errStoreAway)
		return nil
	}
	ctx, cancel := e.storeCtx()
	defer cancel()
	err := e.st.CASOpFence(ctx, cluster, prev, next, &d)
	var re *store.ReplayError
	switch {
	case err == nil:
		if f, ok := e.st.(interface{ Flush() error }); ok {
			if err := f.Flush(); err != nil {
				storeFailed("flush", cluster, err)
			}
		}
		return nil
	case errors.As(err, &re):
		if re.OpFence != nil {
			e.mu.Lock()
			if cs := e.clusters[cluster]; cs != nil && re.OpFence.After(cs.opFence) {
				cs.opFence = *re.OpFence
			}
			e.mu.Unlock()
		}
		return fmt.Errorf("%w: %v", ErrReplay, err)
	}
	storeFailed("cas_op_fence", cluster, err)
	return nil
}

// checkOpFence returns the cluster's operator fence, or why next may not
// follow it; sig is remembered for keep (firstUse).
func (e *engine) checkOpFence(cluster string, next store.OpFence, sig string, keep time.Duration) (store.OpFence, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[cluster]
	if cs == nil {
		return store.OpFence{}, fmt.Errorf("%w %q", ErrUnknownCluster, cluster)
	}
	if err := e.opFence(cs, next); err != nil {
		return cs.opFence, err
	}
	return cs.opFence, e.firstUse(sig, keep)
}

// applyDrain sets a drain (or undrain) as stored. Called with mu held.
func (e *engine) applyDrain(cs *clusterState, d store.Drain, c cause) {
	cs.drained, cs.drainReason, cs.drainAt = d.Drained, d.Reason, d.At
	e.refreshSerial()
	e.update(cs, c)
}

// applySignal takes a stored signal (restored at start, or accepted by
// another replica) as the cluster's sidecar signal, judged by its age like
// a fresh one: past `stale` it is stale. A down signal restored at start
// holds the cluster down until a fresh signal. Called with mu held.
func (e *engine) applySignal(cs *clusterState, sig store.Signal, restoring bool) {
	if cs.sidecar == sigNone || (!restoring && !sig.ReceivedAt.After(cs.reportAt)) {
		return
	}
	now := e.now()
	left := e.cfg.stale - now.Sub(sig.ReceivedAt)
	cs.reportAt = sig.ReceivedAt
	switch {
	case sig.Healthy && left > 0:
		cs.sidecar, cs.sidecarWhy, cs.signaled = sigUp, "healthy", true
	case sig.Healthy:
		cs.sidecar, cs.sidecarWhy = sigStale, fmt.Sprintf("no valid report for %s", e.cfg.stale)
	default:
		cs.sidecar, cs.sidecarWhy, cs.signaled = sigDown, sig.Reason, true
		if left <= 0 {
			cs.sidecar = sigStale
			cs.sidecarWhy = fmt.Sprintf("no valid report for %s (last: %s)", e.cfg.stale, sig.Reason)
		}
		if restoring {
			cs.heldDown = fmt.Sprintf("down before restart (%s, received %s); waiting for a fresh signal",
				sig.Reason, sig.ReceivedAt.Format(time.RFC3339Nano))
			cs.downAt = now
		}
	}
	if !restoring {
		cs.heldDown = ""
	}
	if cs.sidecar == sigStale {
		cs.staleDeadline = time.Time{}
	} else {
		cs.staleDeadline = now.Add(left) // armed by startBackground when restoring
		if !restoring {
			e.armStale(cs, left)
		}
	}
	e.noteDisagreement(cs)
	e.update(cs, cause{observed: sig.ObservedAt, received: now})
}

// restore applies what the store had at start, then the changes heard
// since. It runs before the DNS port answers.
func (e *engine) restore(snap *store.Snapshot) (clusters int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for name, c := range snap.Clusters {
		cs := e.clusters[name]
		if cs == nil {
			continue // no longer configured: kept in the store, ignored
		}
		clusters++
		if c.Fence != nil {
			setFence(cs, *c.Fence)
		}
		if c.OpFence != nil {
			cs.opFence = *c.OpFence
		}
		if c.Drain != nil {
			cs.drained, cs.drainReason, cs.drainAt = c.Drain.Drained, c.Drain.Reason, c.Drain.At
		}
		if c.Signal != nil {
			e.applySignal(cs, *c.Signal, true)
		}
		e.update(cs, cause{received: now})
	}
	e.refreshSerial()
	e.baseRev = snap.Revision
	e.catchUp()
	e.publish(now)
	return clusters
}

// catchUp applies the changes heard before the state was in place, and
// from now on applies them as they come. Called with mu held.
func (e *engine) catchUp() {
	for _, ch := range e.pending {
		if ch.Revision > e.baseRev || ch.Revision == 0 {
			e.applyChangeLocked(ch)
		}
	}
	e.pending, e.restored = nil, true
}

// applyChange applies a change another replica made, as if received here:
// it is neither stored again nor forwarded.
func (e *engine) applyChange(ch store.Change) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.restored {
		e.pending = append(e.pending, ch)
		return
	}
	e.applyChangeLocked(ch)
}

func (e *engine) applyChangeLocked(ch store.Change) {
	cs := e.clusters[ch.Cluster]
	if cs == nil || e.stopped {
		return
	}
	now := e.now()
	switch {
	case ch.Kind == store.KindFence && ch.Fence != nil:
		if ch.Fence.After(fenceOf(cs)) {
			setFence(cs, *ch.Fence)
		}
	case ch.Kind == store.KindOpFence && ch.OpFence != nil:
		if ch.OpFence.After(cs.opFence) {
			cs.opFence = *ch.OpFence
		}
	case ch.Kind == store.KindSignal && ch.Signal != nil:
		e.applySignal(cs, *ch.Signal, false)
	case ch.Kind == store.KindDrain && ch.Drain != nil:
		e.applyDrain(cs, *ch.Drain, cause{received: now})
	case ch.Kind == store.KindDrain && ch.Deleted:
		e.applyDrain(cs, store.Drain{}, cause{received: now})
	}
}

// drainGeneration is the store's generation of the drains in memory: the
// same on every replica holding the same drains.
func (e *engine) drainGeneration() uint32 {
	s := &store.Snapshot{Clusters: map[string]*store.Cluster{}}
	for name, cs := range e.clusters {
		if cs.drained {
			s.Clusters[name] = &store.Cluster{Drain: &store.Drain{Drained: true, At: cs.drainAt}}
		}
	}
	return s.Generation()
}

// refreshSerial rebuilds the name table when the drains changed, so the SOA
// serial follows them (withState). Called with mu held.
func (e *engine) refreshSerial() {
	if e.serial == 0 {
		e.serial = tableSerial(e.table)
	}
	gen := e.drainGeneration()
	if gen == e.drainGen && e.drainGen != 0 {
		return
	}
	e.drainGen = gen
	e.table = newNameTable(e.cfg, withState(e.serial, gen))
}

// withState mixes the operator state into a configuration's SOA serial:
// generation is store.Snapshot.Generation of the drains, the same on every
// replica holding the same drains, so replicas with the same configuration
// and state answer the same serial. (Kept here, not in answer.go, which
// owns the configuration's part of the serial.)
func withState(serial, generation uint32) uint32 { return serial ^ generation }

// attachStore links the engine to its store before it starts.
func (e *engine) attachStore(st store.Store, replica string, timeout time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st, e.replica, e.timeout = st, replica, timeout
}

// inheritStore marks the state as in place after a reload took it over
// from the replaced engine, and applies what was heard meanwhile.
func (e *engine) inheritStore() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.catchUp()
	e.publish(e.now())
}

// storeReplica is the name this replica writes under.
func (e *engine) storeReplica() string { return e.replica }
