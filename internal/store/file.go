package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// fileVersion is the version of the state file's format.
const fileVersion = 1

type fileFormat struct {
	Version  int                 `json:"version"`
	Clusters map[string]*Cluster `json:"clusters"`
}

// CorruptError says the state file could not be read and where it was moved.
// It matches ErrCorrupt.
type CorruptError struct {
	Path    string
	MovedTo string
	Err     error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s unreadable (%v): moved to %s, starting with empty state", e.Path, e.Err, e.MovedTo)
}

func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// FileStore keeps the state of one replica in a JSON file, written
// atomically by a background writer that coalesces changes (the newest
// state wins), so a write never holds up its caller for long.
type FileStore struct {
	path  string
	log   *slog.Logger
	retry time.Duration

	mu        sync.Mutex
	clusters  map[string]*Cluster
	changes   uint64 // counts changes; written is the count on disk
	written   uint64
	closed    bool
	lastErr   error
	lastWrite time.Time
	corrupt   string
	since     time.Time

	writeMu sync.Mutex // one write of the file at a time
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// FileOptions tune a FileStore; the zero value is fine.
type FileOptions struct {
	Logger *slog.Logger
	// Retry is how long the writer waits after a failed write before it
	// tries again (default 1s).
	Retry time.Duration
}

// OpenFile loads the state file at path (none yet is an empty state) and
// starts its writer. If the file is unreadable or corrupt it is moved aside,
// logged loudly, and OpenFile returns a working, empty store together with
// a *CorruptError (errors.Is ErrCorrupt): the caller counts it and starts.
// Any other error (the directory is unusable) comes without a store.
func OpenFile(path string, opts FileOptions) (*FileStore, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Retry <= 0 {
		opts.Retry = time.Second
	}
	s := &FileStore{path: path, log: opts.Logger, retry: opts.Retry, clusters: map[string]*Cluster{},
		since: time.Now(), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	removeTemps(path)
	var loadErr error
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err == nil:
		if s.clusters, err = decodeFile(b); err == nil {
			break
		}
		fallthrough
	default:
		loadErr = s.moveAside(err)
		if loadErr == nil {
			return nil, err
		}
		s.clusters = map[string]*Cluster{}
	}
	go s.writer()
	return s, loadErr
}

func decodeFile(b []byte) (map[string]*Cluster, error) {
	var f fileFormat
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, fileVersion)
	}
	if f.Clusters == nil {
		f.Clusters = map[string]*Cluster{}
	}
	for name, c := range f.Clusters {
		if c == nil {
			delete(f.Clusters, name)
		}
	}
	return f.Clusters, nil
}

// moveAside renames the unreadable file out of the way, so the next write
// does not destroy what an operator may want to look at. It returns the
// *CorruptError to hand to the caller, or nil if even the rename failed.
func (s *FileStore) moveAside(cause error) error {
	to := fmt.Sprintf("%s.corrupt-%d", s.path, time.Now().Unix())
	if err := os.Rename(s.path, to); err != nil {
		s.log.Error("state file unreadable and cannot be moved aside", "path", s.path, "cause", cause, "err", err)
		return nil
	}
	s.corrupt = to
	ce := &CorruptError{Path: s.path, MovedTo: to, Err: cause}
	s.log.Error("STATE FILE CORRUPT: starting with empty state (drains and fences lost)", "path", s.path, "moved_to", to, "err", cause)
	return ce
}

// removeTemps removes temp files a crashed writer left behind.
func removeTemps(path string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	for _, m := range matches {
		os.Remove(m)
	}
}

// Load returns a copy of the state.
func (s *FileStore) Load(context.Context) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Snapshot{Clusters: cloneClusters(s.clusters)}, nil
}

// change applies fn to the cluster's record and schedules a write.
func (s *FileStore) change(cluster string, fn func(c *Cluster) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	c := s.clusters[cluster]
	if c == nil {
		c = &Cluster{}
	}
	if err := fn(c); err != nil {
		return err
	}
	s.clusters[cluster] = c
	s.changes++
	select {
	case s.kick <- struct{}{}:
	default: // a write is already due; it will take this change too
	}
	return nil
}

// CASFence implements Store. Here the compare is local.
func (s *FileStore) CASFence(_ context.Context, cluster string, prev, next Fence, sig *Signal) error {
	return s.change(cluster, func(c *Cluster) error {
		if !fenceMoves(c.Fence, prev, next) {
			return &ReplayError{Cluster: cluster, Fence: utc(c.Fence)}
		}
		c.Fence = utc(&next)
		if sig != nil {
			c.Signal = utcSignal(sig)
		}
		return nil
	})
}

// PutSignal implements Store.
func (s *FileStore) PutSignal(_ context.Context, cluster string, sig Signal) error {
	return s.change(cluster, func(c *Cluster) error { c.Signal = utcSignal(&sig); return nil })
}

// PutDrain implements Store.
func (s *FileStore) PutDrain(_ context.Context, cluster string, d Drain) error {
	return s.change(cluster, func(c *Cluster) error { c.Drain = utcDrain(&d); return nil })
}

// CASOpFence implements Store.
func (s *FileStore) CASOpFence(_ context.Context, cluster string, prev, next OpFence, d *Drain) error {
	return s.change(cluster, func(c *Cluster) error {
		if !opFenceMoves(c.OpFence, prev, next) {
			return &ReplayError{Cluster: cluster, OpFence: utcOp(c.OpFence)}
		}
		c.OpFence = utcOp(&next)
		if d != nil {
			c.Drain = utcDrain(d)
		}
		return nil
	})
}

// Subscribe implements Store: one replica has no one else to hear from.
func (s *FileStore) Subscribe(func(Change)) func() { return func() {} }

// Status implements Store. Connected is false while the last write failed.
func (s *FileStore) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Mode: "file", Path: s.path, Connected: s.lastErr == nil, Since: s.since,
		LastWrite: s.lastWrite, Pending: s.written != s.changes, Corrupt: s.corrupt}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	return st
}

// Flush writes every change made so far to disk before it returns.
func (s *FileStore) Flush() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	n := s.changes
	if n == s.written {
		err := s.lastErr
		s.mu.Unlock()
		return err
	}
	b, err := json.MarshalIndent(fileFormat{Version: fileVersion, Clusters: s.clusters}, "", "  ")
	s.mu.Unlock()
	if err == nil {
		err = writeAtomic(s.path, append(b, '\n'))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if (err == nil) != (s.lastErr == nil) {
		s.since = time.Now()
	}
	s.lastErr = err
	if err != nil {
		return err
	}
	s.written, s.lastWrite = n, time.Now()
	return nil
}

func (s *FileStore) writer() {
	defer close(s.done)
	var retry <-chan time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-retry:
		}
		retry = nil
		if err := s.Flush(); err != nil {
			s.log.Error("writing state file", "path", s.path, "err", err)
			retry = time.After(s.retry)
		}
	}
}

// Close stops the writer and flushes what is pending.
func (s *FileStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	return s.Flush()
}

// writeAtomic replaces path with b so that a crash at any moment leaves
// either the old or the new file: temp file in the same directory, fsync,
// rename, fsync of the directory (or the rename itself may be lost).
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// fenceMoves decides a compare-and-swap of a fence held locally.
func fenceMoves(cur *Fence, prev, next Fence) bool {
	have := Fence{}
	if cur != nil {
		have = *cur
	}
	return sameFence(have, prev) || next.After(have)
}

func sameFence(a, b Fence) bool {
	return a.BootID == b.BootID && a.Sequence == b.Sequence && a.SignedAt.Equal(b.SignedAt)
}

func opFenceMoves(cur *OpFence, prev, next OpFence) bool {
	have := OpFence{}
	if cur != nil {
		have = *cur
	}
	return (have.SignedAt.Equal(prev.SignedAt) && have.Signature == prev.Signature) || next.After(have)
}

// The utc helpers copy a value with its times in UTC, so that its JSON is
// canonical: etcd compares stored bytes.
func utc(f *Fence) *Fence {
	c := *f
	c.SignedAt = c.SignedAt.UTC()
	return &c
}

func utcSignal(s *Signal) *Signal {
	c := *s
	c.ObservedAt, c.ReceivedAt = c.ObservedAt.UTC(), c.ReceivedAt.UTC()
	return &c
}

func utcDrain(d *Drain) *Drain {
	c := *d
	c.At = c.At.UTC()
	return &c
}

func utcOp(o *OpFence) *OpFence {
	c := *o
	c.SignedAt = c.SignedAt.UTC()
	return &c
}

// canonical is the JSON of a value as stored: compact, times in UTC.
func canonical(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
