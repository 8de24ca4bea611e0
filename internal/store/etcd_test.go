package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// newEtcdStore opens a store on endpoints with test timings: one second per
// write, connectivity checked every 100ms, presence on a 2s lease.
func newEtcdStore(t testing.TB, endpoints []string, prefix, replica string) *EtcdStore {
	t.Helper()
	s, err := NewEtcd(EtcdOptions{Endpoints: endpoints, Prefix: prefix, Replica: replica,
		DialTimeout: time.Second, OpTimeout: time.Second, HealthInterval: 100 * time.Millisecond,
		PresenceTTL: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.Load(lctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// recorder collects the changes a subscription hears.
type recorder struct {
	mu      sync.Mutex
	changes []Change
}

func record(s Store) *recorder {
	r := &recorder{}
	s.Subscribe(func(c Change) {
		r.mu.Lock()
		r.changes = append(r.changes, c)
		r.mu.Unlock()
	})
	return r
}

func (r *recorder) list() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Change(nil), r.changes...)
}

// has reports whether a change of kind k of cluster satisfying ok was heard.
func (r *recorder) has(cluster string, k Kind, ok func(Change) bool) bool {
	for _, c := range r.list() {
		if c.Cluster == cluster && c.Kind == k && ok(c) {
			return true
		}
	}
	return false
}

func TestEtcdChangeReachesOtherReplica(t *testing.T) {
	ec := testutil.StartEtcd(t, 3)
	a := newEtcdStore(t, ec.Endpoints(), "/t", "a")
	b := newEtcdStore(t, ec.Endpoints(), "/t", "b")
	ra, rb := record(a), record(b)
	at := time.Now()
	start := time.Now()
	if err := a.PutDrain(ctx, "east", Drain{Drained: true, Reason: "maintenance", At: at, Replica: "a"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "b to hear a's drain", func() bool {
		return rb.has("east", KindDrain, func(c Change) bool { return c.Drain.Drained && c.Drain.Reason == "maintenance" })
	})
	t.Logf("drain put by a heard by b after %s", time.Since(start))
	if got := ra.list(); len(got) != 0 {
		t.Errorf("a heard its own write: %+v", got)
	}
	snap, _ := b.Load(ctx)
	if d := snap.Clusters["east"].Drain; d == nil || !d.At.Equal(at) || d.Replica != "a" {
		t.Fatalf("b's memory: %+v", d)
	}
	if a.Status().Revision == 0 || !b.Status().Connected {
		t.Fatalf("status: a %+v, b %+v", a.Status(), b.Status())
	}
}

// Everything written through one replica is what a replica started later
// loads, field for field; and a generation agrees across them.
func TestEtcdLoadRoundTripsEveryField(t *testing.T) {
	ec := testutil.StartEtcd(t, 1)
	a := newEtcdStore(t, ec.Endpoints(), "/rt", "a")
	want := map[string]*Cluster{}
	for i, name := range []string{"east", "west", "north"} {
		want[name] = fullCluster(i)
		putCluster(t, a, name, want[name])
	}
	b := newEtcdStore(t, ec.Endpoints(), "/rt", "b")
	sa, _ := a.Load(ctx)
	sb, _ := b.Load(ctx)
	sameClusters(t, sb.Clusters, want)
	sameClusters(t, sa.Clusters, want)
	if sa.Generation() != sb.Generation() {
		t.Fatal("replicas with the same drains disagree on the generation")
	}
	// Another prefix is another world.
	c := newEtcdStore(t, ec.Endpoints(), "/other", "c")
	if sc, _ := c.Load(ctx); len(sc.Clusters) != 0 {
		t.Fatalf("prefix /other sees %d clusters", len(sc.Clusters))
	}
}

// Two replicas accept the same report at once: exactly one wins the fence,
// the other gets ErrReplay; 100 times.
func TestEtcdFenceRace(t *testing.T) {
	ec := testutil.StartEtcd(t, 3)
	a := newEtcdStore(t, ec.Endpoints(), "/race", "a")
	b := newEtcdStore(t, ec.Endpoints(), "/race", "b")
	prev := Fence{}
	t0 := time.Now()
	for i := range 100 {
		next := Fence{BootID: "boot", Sequence: uint64(i + 1), SignedAt: t0.Add(time.Duration(i) * time.Millisecond)}
		var errs [2]error
		var wg sync.WaitGroup
		for j, s := range []*EtcdStore{a, b} {
			wg.Go(func() {
				errs[j] = s.CASFence(ctx, "east", prev, next, &Signal{Healthy: true, Reason: "r" + strconv.Itoa(i), Replica: s.o.Replica})
			})
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, ErrReplay):
				t.Fatalf("round %d: %v", i, err)
			default:
				// The loser learns where the fence is: the winner's.
				var re *ReplayError
				if !errors.As(err, &re) || re.Fence == nil || !sameFence(*re.Fence, next) {
					t.Fatalf("round %d: loser's error %#v does not carry the fence %+v", i, err, next)
				}
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners (%v)", i, wins, errs)
		}
		prev = next
	}
	// A replica whose memory of the fence is stale can still not go back.
	old := Fence{BootID: "boot", Sequence: 50, SignedAt: t0}
	if err := a.CASFence(ctx, "east", Fence{}, old, nil); !errors.Is(err, ErrReplay) {
		t.Fatalf("an old sequence from a stale prev: %v", err)
	}
	// But a newer report moves it even from a stale prev.
	if err := a.CASFence(ctx, "east", Fence{}, Fence{BootID: "boot", Sequence: 101}, nil); err != nil {
		t.Fatalf("a newer sequence from a stale prev: %v", err)
	}
	// Operator fences race the same way.
	op := OpFence{SignedAt: t0, Signature: "v1=ab"}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for _, s := range []*EtcdStore{a, b} {
		wg.Go(func() {
			if s.CASOpFence(ctx, "east", OpFence{}, op, &Drain{Drained: true, Replica: s.o.Replica}) == nil {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("operator fence: %d winners", wins.Load())
	}
}

// sequenceWriter moves a's fence through 1..n, retrying each step until
// it lands (a failed write during an election may or may not have landed).
func sequenceWriter(t *testing.T, a *EtcdStore, n int, during func(i int)) {
	t.Helper()
	prev := Fence{}
	for i := 1; i <= n; i++ {
		next := Fence{BootID: "boot", Sequence: uint64(i), SignedAt: time.Unix(1, 0)}
		during(i)
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := a.CASFence(ctx, "east", prev, next, &Signal{Reason: strconv.Itoa(i)})
			if err == nil || errors.Is(err, ErrReplay) { // ErrReplay: an earlier try landed
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("write %d: still failing after 15s: %v", i, err)
			}
		}
		prev = next
	}
}

// checkSequence checks that r heard fences 1..n, each once, in order.
func checkSequence(t *testing.T, r *recorder, n int) {
	t.Helper()
	var seqs []uint64
	for _, c := range r.list() {
		if c.Kind == KindFence {
			seqs = append(seqs, c.Fence.Sequence)
		}
	}
	if len(seqs) != n {
		t.Fatalf("heard %d fence changes, want %d: %v", len(seqs), n, seqs)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("change %d is sequence %d: lost, duplicated or out of order: %v", i, s, seqs)
		}
	}
}

// The leader dies mid-stream: writes flow again after the election, and the
// other replica hears every change exactly once.
func TestEtcdLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills etcd members")
	}
	ec := testutil.StartEtcd(t, 3)
	a := newEtcdStore(t, ec.Endpoints(), "/lk", "a")
	b := newEtcdStore(t, ec.Endpoints(), "/lk", "b")
	rb := record(b)
	var killedAt time.Time
	var resumed time.Duration
	sequenceWriter(t, a, 200, func(i int) {
		switch i {
		case 50:
			killedAt = time.Now()
			t.Logf("killed leader m%d", ec.KillLeader())
		case 51:
			resumed = time.Since(killedAt)
		}
	})
	// Write 51 returned only once it landed: the write stall after the kill.
	t.Logf("first write after the leader's death landed %s after the kill", resumed)
	if resumed > 10*time.Second {
		t.Errorf("writes stalled %s after the leader died", resumed)
	}
	testutil.WaitFor(t, 5*time.Second, "b to hear all 200", func() bool {
		return rb.has("east", KindFence, func(c Change) bool { return c.Fence.Sequence == 200 })
	})
	checkSequence(t, rb, 200)
}

// Every member down: writes fail within their bound, status says so; back
// up: both replicas reconnect and changes flow again.
func TestEtcdAllMembersDown(t *testing.T) {
	if testing.Short() {
		t.Skip("stops etcd")
	}
	ec := testutil.StartEtcd(t, 3)
	a := newEtcdStore(t, ec.Endpoints(), "/down", "a")
	b := newEtcdStore(t, ec.Endpoints(), "/down", "b")
	rb := record(b)
	if err := a.PutDrain(ctx, "east", Drain{Drained: true}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "b to hear the drain", func() bool {
		return rb.has("east", KindDrain, func(c Change) bool { return c.Drain.Drained })
	})
	ec.StopAll()
	start := time.Now()
	err := a.PutDrain(ctx, "east", Drain{Drained: false})
	took := time.Since(start)
	t.Logf("put with etcd down: %v after %s", err, took)
	if err == nil || took > 3*time.Second {
		t.Fatalf("put with every member down: err %v after %s, want an error within 3s", err, took)
	}
	testutil.WaitFor(t, 3*time.Second, "both replicas to say disconnected", func() bool {
		return !a.Status().Connected && !b.Status().Connected
	})
	if st := b.Status(); st.LastError == "" || time.Since(st.Since) > 3*time.Second {
		t.Fatalf("status while down: %+v", st)
	}
	// Memory still answers.
	if snap, _ := b.Load(ctx); !snap.Clusters["east"].Drain.Drained {
		t.Fatal("b lost its memory while etcd was down")
	}
	ec.StartAll()
	testutil.WaitFor(t, 10*time.Second, "both replicas to reconnect", func() bool {
		return a.Status().Connected && b.Status().Connected
	})
	if err := a.PutDrain(ctx, "east", Drain{Drained: false, Reason: "back"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "b to hear the change after the restart", func() bool {
		return rb.has("east", KindDrain, func(c Change) bool { return c.Drain.Reason == "back" })
	})
}

// cutter is a test double of the network between one replica and etcd: a
// loopback TCP forwarder that can drop every connection and refuse new ones.
type cutter struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newCutter(t testing.TB, target string) *cutter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); c.Cut() })
	go c.serve()
	return c
}

func (c *cutter) URL() string { return "http://" + c.l.Addr().String() }

func (c *cutter) serve() {
	for {
		in, err := c.l.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.cut {
			c.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			c.mu.Unlock()
			in.Close()
			continue
		}
		c.conns[in], c.conns[out] = true, true
		c.mu.Unlock()
		go func() { io.Copy(out, in); out.Close() }()
		go func() { io.Copy(in, out); in.Close() }()
	}
}

func (c *cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for conn := range c.conns {
		conn.Close()
		delete(c.conns, conn)
	}
}

func (c *cutter) Restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = false
}

// behindCutters opens a store that reaches every member through a cutter.
func behindCutters(t *testing.T, ec *testutil.EtcdCluster, prefix, replica string) (*EtcdStore, func(), func()) {
	var cs []*cutter
	var urls []string
	for _, m := range ec.Members {
		c := newCutter(t, m.ClientURL[len("http://"):])
		cs = append(cs, c)
		urls = append(urls, c.URL())
	}
	s := newEtcdStore(t, urls, prefix, replica)
	cut := func() {
		for _, c := range cs {
			c.Cut()
		}
	}
	restore := func() {
		for _, c := range cs {
			c.Restore()
		}
	}
	return s, cut, restore
}

// One replica is cut off from etcd while another keeps writing: after the
// cut heals, it hears what it missed (and, with the history compacted
// meanwhile, lists everything again). Its presence expires while it is cut
// off and comes back after.
func TestEtcdCutReplicaResyncs(t *testing.T) {
	if testing.Short() {
		t.Skip("cuts a replica off for seconds")
	}
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprintf("compacted=%v", compact), func(t *testing.T) {
			ec := testutil.StartEtcd(t, 3)
			prefix := "/cut"
			a := newEtcdStore(t, ec.Endpoints(), prefix, "a")
			b, cut, restore := behindCutters(t, ec, prefix, "b")
			rb := record(b)
			for _, cl := range []string{"east", "west"} {
				if err := a.PutDrain(ctx, cl, Drain{Drained: true, Reason: "before"}); err != nil {
					t.Fatal(err)
				}
			}
			testutil.WaitFor(t, 2*time.Second, "b to hear the first drains", func() bool {
				return rb.has("west", KindDrain, func(c Change) bool { return c.Drain.Reason == "before" })
			})
			testutil.WaitFor(t, 3*time.Second, "b's presence", func() bool { return len(replicas(t, a)) == 2 })
			cut()
			testutil.WaitFor(t, 3*time.Second, "b to say disconnected", func() bool { return !b.Status().Connected })
			if err := a.PutDrain(ctx, "east", Drain{Drained: false, Reason: "while cut"}); err != nil {
				t.Fatal(err)
			}
			cli := ec.Client()
			if _, err := cli.Delete(ctx, prefix+"/clusters/west/drain"); err != nil {
				t.Fatal(err)
			}
			if compact {
				resp, err := cli.Get(ctx, "x")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
					t.Fatal(err)
				}
			}
			// b's lease (2s) runs out while it cannot renew it.
			testutil.WaitFor(t, 5*time.Second, "b's presence to expire", func() bool { return len(replicas(t, a)) == 1 })
			restore()
			testutil.WaitFor(t, 10*time.Second, "b to hear what it missed", func() bool {
				return rb.has("east", KindDrain, func(c Change) bool { return c.Drain.Reason == "while cut" }) &&
					rb.has("west", KindDrain, func(c Change) bool { return c.Deleted })
			})
			snap, _ := b.Load(ctx)
			if snap.Clusters["east"].Drain.Drained || snap.Clusters["west"] != nil {
				t.Fatalf("b's memory after the resync: east %+v, west %+v", snap.Clusters["east"].Drain, snap.Clusters["west"])
			}
			if st := b.Status(); !st.Connected || (st.Relists > 0) != compact {
				t.Fatalf("status after resync: %+v (a relist is needed exactly when compacted)", st)
			}
			testutil.WaitFor(t, 3*time.Second, "b's presence back", func() bool { return len(replicas(t, a)) == 2 })
		})
	}
}

func replicas(t *testing.T, s *EtcdStore) []Presence {
	t.Helper()
	ps, err := s.Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestEtcdPresence(t *testing.T) {
	ec := testutil.StartEtcd(t, 1)
	a := newEtcdStore(t, ec.Endpoints(), "/p", "a")
	b := newEtcdStore(t, ec.Endpoints(), "/p", "b")
	b.SetEpoch(42)
	testutil.WaitFor(t, 3*time.Second, "both replicas with b at epoch 42", func() bool {
		ps := replicas(t, a)
		return len(ps) == 2 && ps[0].Replica == "a" && ps[1].Replica == "b" && ps[1].Epoch == 42
	})
	b.Close()
	if ps := replicas(t, a); len(ps) != 1 {
		t.Fatalf("after b closed: %+v (its presence should go at once)", ps)
	}
}

func TestEtcdBadOptions(t *testing.T) {
	for name, o := range map[string]EtcdOptions{
		"no endpoints":    {},
		"missing CA":      {Endpoints: []string{"https://127.0.0.1:1"}, CAFile: "/nonexistent/ca.pem"},
		"half a keypair":  {Endpoints: []string{"https://127.0.0.1:1"}, CertFile: "/nonexistent/c.pem"},
		"missing pw file": {Endpoints: []string{"http://127.0.0.1:1"}, Username: "u", PasswordFile: "/nonexistent/pw"},
		"slash replica":   {Endpoints: []string{"http://127.0.0.1:1"}, Replica: "a/b"},
	} {
		t.Run(name, func(t *testing.T) {
			if s, err := NewEtcd(o); err == nil {
				s.Close()
				t.Fatal("accepted")
			}
		})
	}
}

// Nothing listens: the store still opens, Load gives up when its context
// does, writes fail within OpTimeout.
func TestEtcdUnreachableAtStart(t *testing.T) {
	s, err := NewEtcd(EtcdOptions{Endpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", testutil.FreePort(t))},
		OpTimeout: 500 * time.Millisecond, HealthInterval: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	snap, err := s.Load(lctx)
	if err == nil || snap == nil || len(snap.Clusters) != 0 {
		t.Fatalf("Load with etcd unreachable: %v, %+v", err, snap)
	}
	start := time.Now()
	if err := s.PutDrain(ctx, "east", Drain{}); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("put: %v after %s", err, time.Since(start))
	}
	if st := s.Status(); st.Connected || st.LastError == "" {
		t.Fatalf("status: %+v", st)
	}
}

func ctxWithin(t testing.TB, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(cancel)
	return c
}
