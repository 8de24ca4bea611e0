// Package store keeps what an operator or a sidecar did, beyond one process
// (the `state FILE` store) or across every replica (the `store etcd` store).
//
// The engine keeps answering from memory: it calls Load once before its DNS
// port answers, writes through the Store when something that matters
// changes, and hears about changes other replicas made through Subscribe.
// Nothing here is ever called on the query path.
//
// # What is kept, per cluster
//
//   - fence: the replay fence of the cluster's sidecar reports, the last
//     accepted (boot_id, sequence, signed time). Moved by compare-and-swap
//     only (CASFence), so of two replicas accepting the same report one wins
//     and the other gets ErrReplay.
//   - signal: the last accepted sidecar signal (healthy or not, why, when it
//     was observed in the cluster and received here). Written in the same
//     transaction as the fence that accepted it.
//   - drain: whether an operator drained the cluster, why and when.
//   - op_fence: the fence of operator requests: signed time and signature of
//     the last applied one. Moved by compare-and-swap too (CASOpFence),
//     together with the drain it applies.
//
// # Value formats (an on-disk and in-etcd contract)
//
// Every value is a JSON object; times are RFC 3339 with nanoseconds, in UTC;
// an absent or zero field means "not known". Readers ignore unknown fields,
// so fields can be added without a version bump.
//
//	fence    {"boot_id":"7f0c…","sequence":1234,"signed_at":"2026-11-22T10:00:00.123Z"}
//	signal   {"healthy":false,"reason":"pods: web-1 Exited","observed_at":"…","received_at":"…","replica":"dns-a"}
//	drain    {"drained":true,"reason":"maintenance","at":"…","replica":"dns-a"}
//	op_fence {"signed_at":"…","signature":"v1=3f9a…"}
//	presence {"replica":"dns-a","epoch":42,"started_at":"…","at":"…"}     (etcd only)
//
// In etcd, under the configured prefix P: P/clusters/<cluster>/fence,
// P/clusters/<cluster>/signal, P/clusters/<cluster>/drain,
// P/clusters/<cluster>/op_fence and P/presence/<replica> (under a lease, so
// a dead replica's presence expires; nothing else is ever on a lease).
//
// The state file is {"version":1,"clusters":{"<cluster>":{"fence":…,
// "signal":…,"drain":…,"op_fence":…}}}.
//
// # Use from the plugin
//
// Open the store in OnStartup (never in parse): OpenFile or NewEtcd. Then
// Subscribe, then Load with a bounded context, before the DNS port answers;
// a Change whose Revision is not above the Snapshot's is already in it.
// OpenFile's *CorruptError and a Load that timed out (etcd unreachable) are
// counted and logged, and the server starts anyway. On an accepted report,
// CASFence(prev = the fence in memory, next, signal): nil means accepted,
// ErrReplay means another replica (or an earlier copy) got there first.
// Operator requests go through CASOpFence the same way, with the drain.
// Remote changes arrive through the Subscribe callback, one at a time; apply
// them like local ones (the callback must not block for long). SOA serials
// mix in Snapshot.Generation. Close in OnShutdown.
// Records of clusters the configuration no longer has are kept and ignored.
//
// A store is one per file (or per etcd prefix and replica) per process: a
// Corefile reload must hand the old instance's store to the new one (as the
// push listener is shared), not open a second one on the same file.
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"time"
)

// Store is what the engine needs from persistent or shared state.
// Every method is safe for concurrent use; none is meant for the query path.
type Store interface {
	// Load returns everything known, as of now.
	Load(ctx context.Context) (*Snapshot, error)
	// CASFence moves the cluster's fence from prev (zero: none yet) to
	// next and stores sig with it, atomically. If the stored fence is no
	// longer prev and next is not After it, nothing changes and the error
	// is a *ReplayError (errors.Is ErrReplay); if next is still newer it
	// moves anyway. Any other error (etcd unreachable, a timeout) may or
	// may not have landed: apply the report locally anyway, as etcd being
	// away means serving from local signals.
	CASFence(ctx context.Context, cluster string, prev, next Fence, sig *Signal) error
	// PutSignal stores a signal that comes without a fence.
	PutSignal(ctx context.Context, cluster string, sig Signal) error
	// PutDrain stores a drain (or undrain) without an operator fence.
	PutDrain(ctx context.Context, cluster string, d Drain) error
	// CASOpFence moves the operator fence like CASFence, storing d with it.
	CASOpFence(ctx context.Context, cluster string, prev, next OpFence, d *Drain) error
	// Subscribe calls fn, one call at a time, for every change another
	// replica made (and, after a relist, for everything that differs from
	// memory). Subscribe before Load so nothing falls between them. It
	// returns a function that stops the calls.
	Subscribe(fn func(Change)) (cancel func())
	// Status says how the store is doing, for /v1/status, metrics and logs.
	Status() Status
	// Close flushes what is pending and releases everything.
	Close() error
}

// ErrReplay means the fence already moved to (or past) what was offered.
// The error is a *ReplayError, which says where the fence is.
var ErrReplay = errors.New("store: fence already at or past this one")

// ReplayError is a refused fence move, with the fence as stored now, so the
// caller can bring its memory up to it. It matches ErrReplay.
type ReplayError struct {
	Cluster string
	Fence   *Fence   // set by CASFence
	OpFence *OpFence // set by CASOpFence
}

func (e *ReplayError) Error() string {
	switch {
	case e.Fence != nil:
		return fmt.Sprintf("%v: %s is at boot %s sequence %d", ErrReplay, e.Cluster, e.Fence.BootID, e.Fence.Sequence)
	case e.OpFence != nil:
		return fmt.Sprintf("%v: operator fence of %s is at %s", ErrReplay, e.Cluster, e.OpFence.SignedAt.Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("%v: %s keeps moving", ErrReplay, e.Cluster)
}

func (e *ReplayError) Unwrap() error { return ErrReplay }

// ErrCorrupt means the state file could not be read; it was moved aside and
// the store started empty. Callers count it and carry on.
var ErrCorrupt = errors.New("store: state file unreadable")

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// Fence is the replay fence of a cluster's sidecar reports.
type Fence struct {
	BootID   string    `json:"boot_id"`
	Sequence uint64    `json:"sequence"`
	SignedAt time.Time `json:"signed_at,omitzero"`
}

// IsZero reports whether no report was accepted yet.
func (f Fence) IsZero() bool { return f.BootID == "" && f.Sequence == 0 && f.SignedAt.IsZero() }

// After reports whether a report with fence f may be accepted after one with
// fence prev: a greater sequence of the same boot, or another boot signed
// no earlier (or an old boot's reports could be replayed within the skew).
func (f Fence) After(prev Fence) bool {
	if prev.IsZero() {
		return true
	}
	if f.BootID == prev.BootID {
		return f.Sequence > prev.Sequence
	}
	return !f.SignedAt.Before(prev.SignedAt)
}

// Signal is a cluster's last accepted sidecar signal.
type Signal struct {
	Healthy    bool      `json:"healthy"`
	Reason     string    `json:"reason,omitempty"`
	ObservedAt time.Time `json:"observed_at,omitzero"`
	ReceivedAt time.Time `json:"received_at,omitzero"`
	Replica    string    `json:"replica,omitempty"` // the replica that accepted it
}

// Drain is an operator's drain (Drained) or undrain of a cluster.
type Drain struct {
	Drained bool      `json:"drained"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at,omitzero"`
	Replica string    `json:"replica,omitempty"`
}

// OpFence is the fence of operator requests: the signed time and signature
// (as sent, e.g. "v1=<hex>") of the last applied one.
type OpFence struct {
	SignedAt  time.Time `json:"signed_at,omitzero"`
	Signature string    `json:"signature,omitempty"`
}

// IsZero reports whether no operator request was applied yet.
func (o OpFence) IsZero() bool { return o.SignedAt.IsZero() && o.Signature == "" }

// After reports whether a request with fence o may be applied after prev:
// signed later, or in the same millisecond with a greater signature (a
// deterministic tie-break, the same on every replica).
func (o OpFence) After(prev OpFence) bool {
	if prev.IsZero() {
		return true
	}
	if o.SignedAt.Equal(prev.SignedAt) {
		return o.Signature > prev.Signature
	}
	return o.SignedAt.After(prev.SignedAt)
}

// Cluster is everything stored about one cluster. Nil fields are not known.
type Cluster struct {
	Fence   *Fence   `json:"fence,omitempty"`
	Signal  *Signal  `json:"signal,omitempty"`
	Drain   *Drain   `json:"drain,omitempty"`
	OpFence *OpFence `json:"op_fence,omitempty"`
}

func (c *Cluster) clone() *Cluster {
	out := &Cluster{}
	if c.Fence != nil {
		f := *c.Fence
		out.Fence = &f
	}
	if c.Signal != nil {
		s := *c.Signal
		out.Signal = &s
	}
	if c.Drain != nil {
		d := *c.Drain
		out.Drain = &d
	}
	if c.OpFence != nil {
		o := *c.OpFence
		out.OpFence = &o
	}
	return out
}

// Snapshot is a copy of everything stored; the caller owns it.
type Snapshot struct {
	Clusters map[string]*Cluster
	// Revision is the etcd revision the snapshot is as of (0 for a file).
	Revision int64
}

func cloneClusters(m map[string]*Cluster) map[string]*Cluster {
	out := make(map[string]*Cluster, len(m))
	for k, v := range m {
		out[k] = v.clone()
	}
	return out
}

// Generation is a value derived only from the drains in s: the same on every
// replica that holds the same drains, whenever and wherever it started. The
// DNS code mixes it into the SOA serial, so replicas with the same config
// and the same operator state answer the same serial.
func (s *Snapshot) Generation() uint32 {
	h := fnv.New32a()
	for _, name := range slices.Sorted(maps.Keys(s.Clusters)) {
		d := s.Clusters[name].Drain
		if d == nil || !d.Drained {
			continue
		}
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(d.At.UnixNano())))
	}
	return h.Sum32()
}

// Kind names the part of a cluster's record a Change is about.
type Kind string

// The kinds of change; they are also the last element of the etcd keys.
const (
	KindFence   Kind = "fence"
	KindSignal  Kind = "signal"
	KindDrain   Kind = "drain"
	KindOpFence Kind = "op_fence"
)

// Change is one change another replica made. Exactly the field of Kind is
// set, unless Deleted.
type Change struct {
	Cluster  string
	Kind     Kind
	Deleted  bool
	Revision int64
	Fence    *Fence
	Signal   *Signal
	Drain    *Drain
	OpFence  *OpFence
}

// Status is what the store reports about itself.
type Status struct {
	Mode      string    `json:"mode"` // "file" or "etcd"
	Path      string    `json:"path,omitempty"`
	Endpoints []string  `json:"endpoints,omitempty"`
	Prefix    string    `json:"prefix,omitempty"`
	Replica   string    `json:"replica,omitempty"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"` // when Connected last changed
	Revision  int64     `json:"revision,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	LastWrite time.Time `json:"last_write,omitzero"`
	Pending   bool      `json:"pending,omitempty"` // a write is not yet on disk
	Corrupt   string    `json:"corrupt,omitempty"` // where an unreadable state file was moved
	Relists   int       `json:"relists,omitempty"` // full relists after compaction or a failed watch
}
