package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// EtcdOptions configure an EtcdStore. Endpoints is required.
type EtcdOptions struct {
	Endpoints []string
	// Prefix of every key (default /healthswitch). Replicas that share a
	// prefix share state.
	Prefix string
	// TLS: client certificate and key (both or neither) and the CA that
	// signed the servers' certificates (default: the system's).
	CertFile, KeyFile, CAFile string
	// Username and the file holding its password, for etcd's own auth.
	Username, PasswordFile string
	// Replica names this process in presence/ and in what it writes
	// (default: the host name).
	Replica string
	// DialTimeout bounds connecting (default 2s); OpTimeout bounds every
	// write (default 2s), so a write never hangs its caller.
	DialTimeout, OpTimeout time.Duration
	// HealthInterval is how often connectivity is checked (default 500ms).
	HealthInterval time.Duration
	// PresenceTTL is the lease of presence/<replica> (default 10s, whole
	// seconds, at least 2s). Only presence is on a lease.
	PresenceTTL time.Duration
	Logger      *slog.Logger
}

func (o *EtcdOptions) defaults() error {
	if len(o.Endpoints) == 0 {
		return errors.New("store etcd: no endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = "/healthswitch"
	}
	o.Prefix = "/" + strings.Trim(o.Prefix, "/")
	if o.Replica == "" {
		o.Replica, _ = os.Hostname()
	}
	if strings.Contains(o.Replica, "/") || o.Replica == "" {
		return fmt.Errorf("store etcd: replica name %q", o.Replica)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 2 * time.Second
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = 500 * time.Millisecond
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = 10 * time.Second
	}
	o.PresenceTTL = max(o.PresenceTTL.Round(time.Second), 2*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

func (o *EtcdOptions) clientConfig() (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          o.DialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Username:             o.Username,
		Logger:               zap.NewNop(), // transitions are logged here, once each
		// gRPC's default reconnect backoff grows to 2 minutes; resync
		// should follow etcd's return within seconds.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: o.DialTimeout,
		})},
	}
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("store etcd: password_file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	if o.CertFile == "" && o.KeyFile == "" && o.CAFile == "" {
		return cfg, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return cfg, fmt.Errorf("store etcd: tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return cfg, fmt.Errorf("store etcd: tls: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("store etcd: tls: no certificate in %s", o.CAFile)
		}
	}
	cfg.TLS = tc
	return cfg, nil
}

// EtcdStore shares state between replicas through etcd. It keeps a copy of
// everything under its prefix in memory, fed by a watch; reads never leave
// the process, writes are bounded by OpTimeout.
type EtcdStore struct {
	o      EtcdOptions
	cli    *clientv3.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// rewatch asks the sync loop to restart its watch (after a reconnect).
	rewatch chan struct{}
	synced  chan struct{} // closed after the first full list

	mu        sync.Mutex
	clusters  map[string]*Cluster
	modRev    map[string]int64 // key -> mod revision of the value in memory
	rev       int64            // everything up to here is in memory
	connected bool
	since     time.Time
	lastErr   error
	relists   int
	subs      map[int]func(Change)
	nextSub   int
	epoch     uint64
	started   time.Time
	lease     clientv3.LeaseID
	leaseAt   time.Time // last keep-alive
	presented uint64    // epoch last written to presence, +1 (0: none)
	// writing counts this replica's writes in flight by key and value: the
	// watch often delivers a write before its own ack, and a change this
	// replica is writing itself is not news to it.
	writing map[string]map[string]int
	closed  bool
}

// NewEtcd connects to etcd and starts the watch in the background; it fails
// only on bad options. Load waits for the first full list.
func NewEtcd(o EtcdOptions) (*EtcdStore, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	cfg, err := o.clientConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("store etcd: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	s := &EtcdStore{o: o, cli: cli, ctx: ctx, cancel: cancel, rewatch: make(chan struct{}, 1),
		synced: make(chan struct{}), clusters: map[string]*Cluster{}, modRev: map[string]int64{},
		since: now, started: now, subs: map[int]func(Change){}, writing: map[string]map[string]int{}}
	s.wg.Add(2)
	go s.syncLoop()
	go s.healthLoop()
	return s, nil
}

func (s *EtcdStore) clustersPrefix() string { return s.o.Prefix + "/clusters/" }
func (s *EtcdStore) presencePrefix() string { return s.o.Prefix + "/presence/" }

func (s *EtcdStore) key(cluster string, k Kind) string {
	return s.clustersPrefix() + cluster + "/" + string(k)
}

// parseKey splits P/clusters/<cluster>/<kind>.
func (s *EtcdStore) parseKey(key string) (string, Kind, bool) {
	rest, ok := strings.CutPrefix(key, s.clustersPrefix())
	if !ok {
		return "", "", false
	}
	cluster, kind, ok := strings.Cut(rest, "/")
	switch Kind(kind) {
	case KindFence, KindSignal, KindDrain, KindOpFence:
		return cluster, Kind(kind), ok && cluster != ""
	}
	return "", "", false
}

func validCluster(name string) error {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return fmt.Errorf("store: cluster name %q", name)
	}
	return nil
}

// Load implements Store. It waits (within ctx) for the first full list of
// the prefix; until then it returns what it has and the reason it has no more.
func (s *EtcdStore) Load(ctx context.Context) (*Snapshot, error) {
	var err error
	select {
	case <-s.synced:
	case <-ctx.Done():
		err = fmt.Errorf("store etcd: not yet listed: %w (last error: %v)", ctx.Err(), s.Status().LastError)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Snapshot{Clusters: cloneClusters(s.clusters), Revision: s.rev}, err
}

// CASFence implements Store with one etcd transaction: if the stored fence
// is prev, put next and sig; else read what is there and decide.
func (s *EtcdStore) CASFence(ctx context.Context, cluster string, prev, next Fence, sig *Signal) error {
	if err := validCluster(cluster); err != nil {
		return err
	}
	fk := s.key(cluster, KindFence)
	puts := map[Kind]any{KindFence: utc(&next)}
	if sig != nil {
		puts[KindSignal] = utcSignal(sig)
	}
	for range 3 {
		cur, err := s.cas(ctx, cluster, fk, prevCmp(fk, prev.IsZero(), utc(&prev)), puts)
		if err != nil || cur == nil {
			return err
		}
		var have Fence
		if err := json.Unmarshal(cur.Value, &have); err != nil {
			return fmt.Errorf("store etcd: %s: %w", fk, err)
		}
		if !next.After(have) {
			return &ReplayError{Cluster: cluster, Fence: &have}
		}
		prev = have // someone moved it, but not as far: move on from there
	}
	return &ReplayError{Cluster: cluster}
}

// CASOpFence implements Store like CASFence.
func (s *EtcdStore) CASOpFence(ctx context.Context, cluster string, prev, next OpFence, d *Drain) error {
	if err := validCluster(cluster); err != nil {
		return err
	}
	fk := s.key(cluster, KindOpFence)
	puts := map[Kind]any{KindOpFence: utcOp(&next)}
	if d != nil {
		puts[KindDrain] = utcDrain(d)
	}
	for range 3 {
		cur, err := s.cas(ctx, cluster, fk, prevCmp(fk, prev.IsZero(), utcOp(&prev)), puts)
		if err != nil || cur == nil {
			return err
		}
		var have OpFence
		if err := json.Unmarshal(cur.Value, &have); err != nil {
			return fmt.Errorf("store etcd: %s: %w", fk, err)
		}
		if !next.After(have) {
			return &ReplayError{Cluster: cluster, OpFence: &have}
		}
		prev = have
	}
	return &ReplayError{Cluster: cluster}
}

// prevCmp is the condition "the fence at key is still prev": absent when
// prev is zero, else byte-equal to its canonical JSON.
func prevCmp(key string, zero bool, prev any) clientv3.Cmp {
	if zero {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.Value(key), "=", string(canonical(prev)))
}

// cas runs If(cmp) Then(puts) Else(get fenceKey). It returns the stored
// fence's key-value when the compare failed (nil when it succeeded).
func (s *EtcdStore) cas(ctx context.Context, cluster, fenceKey string, cmp clientv3.Cmp, puts map[Kind]any) (*mvccpb.KeyValue, error) {
	var ops []clientv3.Op
	vals := map[Kind][]byte{}
	for k, v := range puts {
		vals[k] = canonical(v)
		ops = append(ops, clientv3.OpPut(s.key(cluster, k), string(vals[k])))
	}
	defer s.mine(ops)()
	ctx, cancel := context.WithTimeout(ctx, s.o.OpTimeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(cmp).Then(ops...).Else(clientv3.OpGet(fenceKey)).Commit()
	if err != nil {
		s.failed(err)
		return nil, fmt.Errorf("store etcd: %w", err)
	}
	s.ok()
	if resp.Succeeded {
		s.applyLocal(cluster, vals, resp.Header.Revision)
		return nil, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		// Deleted since prev was read: compare against "absent" next time.
		return &mvccpb.KeyValue{Value: []byte("{}")}, nil
	}
	return kvs[0], nil
}

// PutSignal implements Store.
func (s *EtcdStore) PutSignal(ctx context.Context, cluster string, sig Signal) error {
	return s.put(ctx, cluster, KindSignal, utcSignal(&sig))
}

// PutDrain implements Store.
func (s *EtcdStore) PutDrain(ctx context.Context, cluster string, d Drain) error {
	return s.put(ctx, cluster, KindDrain, utcDrain(&d))
}

func (s *EtcdStore) put(ctx context.Context, cluster string, k Kind, v any) error {
	if err := validCluster(cluster); err != nil {
		return err
	}
	b := canonical(v)
	put := clientv3.OpPut(s.key(cluster, k), string(b))
	defer s.mine([]clientv3.Op{put})()
	ctx, cancel := context.WithTimeout(ctx, s.o.OpTimeout)
	defer cancel()
	resp, err := s.cli.Do(ctx, put)
	if err != nil {
		s.failed(err)
		return fmt.Errorf("store etcd: %w", err)
	}
	s.ok()
	s.applyLocal(cluster, map[Kind][]byte{k: b}, resp.Put().Header.Revision)
	return nil
}

// mine notes puts as this replica's own until the returned func is called.
func (s *EtcdStore) mine(ops []clientv3.Op) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, op := range ops {
		k, v := string(op.KeyBytes()), string(op.ValueBytes())
		if s.writing[k] == nil {
			s.writing[k] = map[string]int{}
		}
		s.writing[k][v]++
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, op := range ops {
			k, v := string(op.KeyBytes()), string(op.ValueBytes())
			if s.writing[k][v]--; s.writing[k][v] == 0 {
				delete(s.writing[k], v)
			}
			if len(s.writing[k]) == 0 {
				delete(s.writing, k)
			}
		}
	}
}

// applyLocal puts this replica's own successful write into memory, so its
// echo from the watch is recognised (same mod revision) and not announced.
func (s *EtcdStore) applyLocal(cluster string, vals map[Kind][]byte, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, b := range vals {
		s.applyKV(s.key(cluster, k), cluster, k, b, rev, false)
	}
}

// applyKV sets one value in memory unless memory already has it or newer,
// and returns the Change it makes. Called with mu held.
func (s *EtcdStore) applyKV(key, cluster string, k Kind, val []byte, modRev int64, deleted bool) *Change {
	have, known := s.modRev[key]
	if modRev <= have || (deleted && !known) {
		return nil
	}
	ch := &Change{Cluster: cluster, Kind: k, Deleted: deleted, Revision: modRev}
	c := s.clusters[cluster]
	if c == nil {
		c = &Cluster{}
		s.clusters[cluster] = c
	}
	if deleted {
		delete(s.modRev, key)
		setKind(c, k, nil)
		if *c == (Cluster{}) {
			delete(s.clusters, cluster)
		}
		return ch
	}
	if err := decodeKind(ch, k, val); err != nil {
		s.o.Logger.Error("store etcd: undecodable value, ignored", "key", key, "err", err)
		return nil
	}
	s.modRev[key] = modRev
	setKind(c, k, ch)
	return ch
}

func decodeKind(ch *Change, k Kind, val []byte) error {
	switch k {
	case KindFence:
		ch.Fence = &Fence{}
		return json.Unmarshal(val, ch.Fence)
	case KindSignal:
		ch.Signal = &Signal{}
		return json.Unmarshal(val, ch.Signal)
	case KindDrain:
		ch.Drain = &Drain{}
		return json.Unmarshal(val, ch.Drain)
	default:
		ch.OpFence = &OpFence{}
		return json.Unmarshal(val, ch.OpFence)
	}
}

// setKind stores a copy of ch's value of kind k in c (nil ch clears it).
func setKind(c *Cluster, k Kind, ch *Change) {
	if ch == nil {
		ch = &Change{}
	}
	cp := (&Cluster{Fence: ch.Fence, Signal: ch.Signal, Drain: ch.Drain, OpFence: ch.OpFence}).clone()
	switch k {
	case KindFence:
		c.Fence = cp.Fence
	case KindSignal:
		c.Signal = cp.Signal
	case KindDrain:
		c.Drain = cp.Drain
	case KindOpFence:
		c.OpFence = cp.OpFence
	}
}

// Subscribe implements Store. Calls come from one goroutine, in revision
// order; a slow fn delays the next change, not the query path.
func (s *EtcdStore) Subscribe(fn func(Change)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, id)
	}
}

func (s *EtcdStore) announce(changes []*Change) {
	if len(changes) == 0 {
		return
	}
	s.mu.Lock()
	subs := make([]func(Change), 0, len(s.subs))
	for _, fn := range s.subs {
		subs = append(subs, fn)
	}
	s.mu.Unlock()
	for _, ch := range changes {
		for _, fn := range subs {
			fn(*ch)
		}
	}
}

// Status implements Store.
func (s *EtcdStore) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Mode: "etcd", Endpoints: s.o.Endpoints, Prefix: s.o.Prefix, Replica: s.o.Replica,
		Connected: s.connected, Since: s.since, Revision: s.rev, Relists: s.relists}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	return st
}

// Connected reports whether the last contact with etcd worked.
func (s *EtcdStore) Connected() bool { return s.Status().Connected }

func (s *EtcdStore) ok() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connected {
		return
	}
	s.connected, s.since = true, time.Now()
	s.o.Logger.Info("store etcd: connected", "endpoints", s.o.Endpoints, "prefix", s.o.Prefix)
	select {
	case s.rewatch <- struct{}{}:
	default:
	}
}

func (s *EtcdStore) failed(err error) {
	if errors.Is(err, context.Canceled) && s.ctx.Err() != nil {
		return // closing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = err
	if !s.connected {
		return
	}
	s.connected, s.since = false, time.Now()
	s.o.Logger.Error("store etcd: disconnected, serving from memory", "endpoints", s.o.Endpoints, "err", err)
}

// syncLoop keeps memory equal to etcd: a full list, then a watch from the
// revision after it; a failed watch resumes from the last revision seen, a
// compacted one lists everything again.
func (s *EtcdStore) syncLoop() {
	defer s.wg.Done()
	listed := false
	for s.ctx.Err() == nil {
		if !listed {
			if err := s.relist(); err != nil {
				s.failed(err)
				s.pause(s.o.HealthInterval)
				continue
			}
			listed = true
		}
		listed = s.watch()
	}
}

func (s *EtcdStore) pause(d time.Duration) {
	select {
	case <-s.ctx.Done():
	case <-s.rewatch:
	case <-time.After(d):
	}
}

// relist reads the whole prefix and announces what differs from memory.
func (s *EtcdStore) relist() error {
	ctx, cancel := context.WithTimeout(s.ctx, s.o.OpTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.clustersPrefix(), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	s.ok()
	var changes []*Change
	s.mu.Lock()
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		cluster, k, ok := s.parseKey(key)
		if !ok {
			continue
		}
		seen[key] = true
		if ch := s.applyKV(key, cluster, k, kv.Value, kv.ModRevision, false); ch != nil {
			changes = append(changes, ch)
		}
	}
	for key := range s.modRev {
		if !seen[key] {
			cluster, k, _ := s.parseKey(key)
			changes = append(changes, s.applyKV(key, cluster, k, nil, resp.Header.Revision, true))
		}
	}
	s.rev = max(s.rev, resp.Header.Revision)
	select {
	case <-s.synced:
		s.relists++
		s.o.Logger.Warn("store etcd: relisted everything", "revision", resp.Header.Revision, "changes", len(changes))
	default:
		close(s.synced)
	}
	s.mu.Unlock()
	s.announce(changes)
	return nil
}

// watch watches from the revision after the last one in memory until the
// watch fails or a reconnect asks for a new one. It returns false when
// memory can no longer be brought up to date by a watch (compaction).
func (s *EtcdStore) watch() bool {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	s.mu.Lock()
	from := s.rev + 1
	s.mu.Unlock()
	// Progress notifications move s.rev on while the prefix is quiet, so a
	// resume after a cut starts late enough not to hit compacted history.
	wch := s.cli.Watch(ctx, s.clustersPrefix(), clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	for {
		select {
		case <-s.ctx.Done():
			return true
		case <-s.rewatch:
			return true
		case resp, open := <-wch:
			if !open {
				s.pause(100 * time.Millisecond)
				return true
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					s.o.Logger.Warn("store etcd: watch compacted, relisting", "from", from, "compacted", resp.CompactRevision)
					return false
				}
				s.failed(err)
				s.pause(100 * time.Millisecond)
				return true
			}
			s.events(resp)
		}
	}
}

func (s *EtcdStore) events(resp clientv3.WatchResponse) {
	var changes []*Change
	s.mu.Lock()
	for _, ev := range resp.Events {
		key := string(ev.Kv.Key)
		cluster, k, ok := s.parseKey(key)
		if !ok {
			continue
		}
		ch := s.applyKV(key, cluster, k, ev.Kv.Value, ev.Kv.ModRevision, ev.Type == mvccpb.DELETE)
		if ch != nil && (ev.Type == mvccpb.DELETE || s.writing[key][string(ev.Kv.Value)] == 0) {
			changes = append(changes, ch)
		}
	}
	s.rev = max(s.rev, resp.Header.Revision)
	s.mu.Unlock()
	s.announce(changes)
}

// healthLoop checks every HealthInterval that etcd answers a linearizable
// read (which needs a quorum), and keeps presence/<replica> alive.
func (s *EtcdStore) healthLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.o.HealthInterval)
	defer t.Stop()
	for {
		s.checkOnce()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkOnce is one step of healthLoop.
func (s *EtcdStore) checkOnce() {
	ctx, cancel := context.WithTimeout(s.ctx, max(2*s.o.HealthInterval, time.Second))
	defer cancel()
	resp, err := s.cli.Get(ctx, s.presencePrefix()+s.o.Replica)
	if err != nil {
		s.failed(err)
		return
	}
	s.ok()
	if err := s.keepPresence(ctx, len(resp.Kvs) > 0); err != nil {
		s.failed(err)
	}
}

// Presence is one replica's entry in presence/.
type Presence struct {
	Replica   string    `json:"replica"`
	Epoch     uint64    `json:"epoch"`
	StartedAt time.Time `json:"started_at"`
	At        time.Time `json:"at"`
}

// SetEpoch records the replica's snapshot epoch, published in presence/
// within one HealthInterval.
func (s *EtcdStore) SetEpoch(epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch = epoch
}

// keepPresence renews the lease and rewrites the presence key when it is
// missing (expired while cut off) or its epoch is old.
func (s *EtcdStore) keepPresence(ctx context.Context, present bool) error {
	s.mu.Lock()
	lease, leaseAt, epoch, written := s.lease, s.leaseAt, s.epoch, s.presented
	s.mu.Unlock()
	if lease != 0 && time.Since(leaseAt) > s.o.PresenceTTL/3 {
		if _, err := s.cli.KeepAliveOnce(ctx, lease); err != nil {
			if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return err
			}
			lease, present = 0, false
		}
		leaseAt = time.Now()
	}
	if lease == 0 {
		g, err := s.cli.Grant(ctx, int64(s.o.PresenceTTL/time.Second))
		if err != nil {
			return err
		}
		lease, leaseAt, present = g.ID, time.Now(), false
	}
	if !present || written != epoch+1 {
		v := canonical(Presence{Replica: s.o.Replica, Epoch: epoch, StartedAt: s.started.UTC(), At: time.Now().UTC()})
		if _, err := s.cli.Put(ctx, s.presencePrefix()+s.o.Replica, string(v), clientv3.WithLease(lease)); err != nil {
			return err
		}
		written = epoch + 1
	}
	s.mu.Lock()
	s.lease, s.leaseAt, s.presented = lease, leaseAt, written
	s.mu.Unlock()
	return nil
}

// Replicas lists the replicas present now (from etcd: not for the query path).
func (s *EtcdStore) Replicas(ctx context.Context) ([]Presence, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.OpTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.presencePrefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("store etcd: %w", err)
	}
	out := make([]Presence, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var p Presence
		if json.Unmarshal(kv.Value, &p) == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Close stops the watch, takes this replica's presence away at once
// (revoking its lease) and closes the client.
func (s *EtcdStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	lease := s.lease
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	if lease != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.o.OpTimeout/2)
		s.cli.Revoke(ctx, lease)
		cancel()
	}
	return s.cli.Close()
}
