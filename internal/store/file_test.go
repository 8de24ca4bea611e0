package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

var ctx = context.Background()

func openFile(t *testing.T, path string) *FileStore {
	t.Helper()
	s, err := OpenFile(path, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fullCluster fills every field of every record, times in a zone other
// than UTC and with nanoseconds, so a round trip that drops any shows.
func fullCluster(i int) *Cluster {
	zone := time.FixedZone("X", 3600)
	at := time.Date(2026, 11, 22, 10, 0, i, 123456789, zone)
	return &Cluster{
		Fence:   &Fence{BootID: fmt.Sprintf("boot-%d", i), Sequence: uint64(1000 + i), SignedAt: at},
		Signal:  &Signal{Healthy: i%2 == 0, Reason: "pods: web-1 Exited", ObservedAt: at.Add(-time.Millisecond), ReceivedAt: at.Add(time.Millisecond), Replica: "dns-a"},
		Drain:   &Drain{Drained: true, Reason: "maintenance \"window\"", At: at, Replica: "dns-b"},
		OpFence: &OpFence{SignedAt: at, Signature: "v1=3f9a" + strconv.Itoa(i)},
	}
}

func putCluster(t testing.TB, s Store, name string, c *Cluster) {
	t.Helper()
	if err := s.CASFence(ctx, name, Fence{}, *c.Fence, c.Signal); err != nil {
		t.Fatalf("CASFence: %v", err)
	}
	if err := s.CASOpFence(ctx, name, OpFence{}, *c.OpFence, c.Drain); err != nil {
		t.Fatalf("CASOpFence: %v", err)
	}
}

// sameClusters compares clusters in their canonical (UTC) form, so times
// compare as instants.
func sameClusters(t *testing.T, got, want map[string]*Cluster) {
	t.Helper()
	norm := func(m map[string]*Cluster) string {
		out := map[string]*Cluster{}
		for k, c := range m {
			cc := &Cluster{}
			if c.Fence != nil {
				cc.Fence = utc(c.Fence)
			}
			if c.Signal != nil {
				cc.Signal = utcSignal(c.Signal)
			}
			if c.Drain != nil {
				cc.Drain = utcDrain(c.Drain)
			}
			if c.OpFence != nil {
				cc.OpFence = utcOp(c.OpFence)
			}
			out[k] = cc
		}
		return string(canonical(out))
	}
	if g, w := norm(got), norm(want); g != w {
		t.Fatalf("state differs:\n got %s\nwant %s", g, w)
	}
}

func TestFileRoundTripsEveryField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := openFile(t, path)
	want := map[string]*Cluster{}
	for i, name := range []string{"east", "west", "north"} {
		want[name] = fullCluster(i)
		putCluster(t, s, name, want[name])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openFile(t, path)
	snap, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameClusters(t, snap.Clusters, want)
	// The exact instants survive (nanoseconds, any zone in, UTC on disk).
	if got := snap.Clusters["west"].Fence.SignedAt; !got.Equal(want["west"].Fence.SignedAt) || got.Location() != time.UTC {
		t.Fatalf("signed_at %v, want %v in UTC", got, want["west"].Fence.SignedAt)
	}
	// The file is the documented format.
	b, _ := os.ReadFile(path)
	var f struct {
		Version  int                                   `json:"version"`
		Clusters map[string]map[string]json.RawMessage `json:"clusters"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		t.Fatalf("file: %v, version %d", err, f.Version)
	}
	for _, k := range []string{"fence", "signal", "drain", "op_fence"} {
		if _, ok := f.Clusters["east"][k]; !ok {
			t.Errorf("file has no clusters.east.%s:\n%s", k, b)
		}
	}
	if !strings.Contains(string(b), `"boot_id": "boot-0"`) || !strings.Contains(string(b), `"signature": "v1=3f9a0"`) {
		t.Errorf("file lacks documented fields:\n%s", b)
	}
}

func TestFileFences(t *testing.T) {
	s := openFile(t, filepath.Join(t.TempDir(), "state.json"))
	t0 := time.Now()
	f1 := Fence{BootID: "b1", Sequence: 1, SignedAt: t0}
	f2 := Fence{BootID: "b1", Sequence: 2, SignedAt: t0.Add(time.Millisecond)}
	old := Fence{BootID: "b0", Sequence: 99, SignedAt: t0.Add(-time.Second)}
	steps := []struct {
		name       string
		prev, next Fence
		want       error
	}{
		{"first", Fence{}, f1, nil},
		{"same again", Fence{}, f1, ErrReplay},
		{"next", f1, f2, nil},
		{"older sequence from a stale prev", Fence{}, f1, ErrReplay},
		{"older boot", f2, old, nil}, // prev matches: a CAS is a CAS
		{"newer from stale prev still moves", f1, Fence{BootID: "b2", Sequence: 1, SignedAt: t0.Add(time.Second)}, nil},
		{"old boot from stale prev", f1, old, ErrReplay},
	}
	var have Fence
	for _, st := range steps {
		err := s.CASFence(ctx, "east", st.prev, st.next, nil)
		if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
			t.Fatalf("%s: err %v, want %v", st.name, err, st.want)
		}
		var re *ReplayError
		if errors.As(err, &re) && (re.Fence == nil || !sameFence(*re.Fence, have)) {
			t.Fatalf("%s: refusal says the fence is at %+v, it is at %+v", st.name, re.Fence, have)
		}
		if err == nil {
			have = st.next
		}
	}
	o1 := OpFence{SignedAt: t0, Signature: "v1=aa"}
	if err := s.CASOpFence(ctx, "east", OpFence{}, o1, &Drain{Drained: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.CASOpFence(ctx, "east", OpFence{}, o1, &Drain{Drained: false}); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed operator request: %v", err)
	}
	snap, _ := s.Load(ctx)
	if !snap.Clusters["east"].Drain.Drained {
		t.Fatal("a replayed operator request changed the drain")
	}
}

func TestFileCorruptMovedAside(t *testing.T) {
	for name, content := range map[string]string{
		"truncated":     `{"version":1,"clusters":{"east":{"fence":{"boot_`,
		"not json":      "\x00\x01garbage",
		"wrong version": `{"version":7,"clusters":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			os.WriteFile(path, []byte(content), 0o600)
			s, err := OpenFile(path, FileOptions{})
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("err %v, want a CorruptError", err)
			}
			if s == nil {
				t.Fatal("no store: the caller must still start")
			}
			defer s.Close()
			moved, rerr := os.ReadFile(ce.MovedTo)
			if rerr != nil || string(moved) != content || !strings.HasPrefix(filepath.Base(ce.MovedTo), "state.json.corrupt-") {
				t.Fatalf("moved to %s: %v %q", ce.MovedTo, rerr, moved)
			}
			if st := s.Status(); st.Corrupt != ce.MovedTo {
				t.Fatalf("status corrupt %q", st.Corrupt)
			}
			// It works from empty, and writes a good file again.
			if err := s.PutDrain(ctx, "east", Drain{Drained: true}); err != nil {
				t.Fatal(err)
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			s2 := openFile(t, path)
			snap, _ := s2.Load(ctx)
			if len(snap.Clusters) != 1 || !snap.Clusters["east"].Drain.Drained {
				t.Fatalf("after recovery: %+v", snap.Clusters)
			}
		})
	}
}

func TestFileWriteFailsThenRecovers(t *testing.T) {
	// A read-only directory does not stop root: a file where the directory
	// should be stops everyone.
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.json")
	s := openFile(t, path)
	os.RemoveAll(filepath.Join(dir, "sub"))
	os.WriteFile(filepath.Join(dir, "sub"), nil, 0o600) // the directory is now a file
	s.PutDrain(ctx, "east", Drain{Drained: true})
	if err := s.Flush(); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
	if st := s.Status(); st.Connected || st.LastError == "" || !st.Pending {
		t.Fatalf("status after a failed write: %+v", st)
	}
	os.Remove(filepath.Join(dir, "sub"))
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	testutil.WaitFor(t, 5*time.Second, "the writer to retry", func() bool { return s.Status().Connected })
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

// Many changes between two writes become one write of the newest state.
func TestFileCoalesces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := openFile(t, path)
	start := time.Now()
	for i := range 2000 {
		if err := s.PutSignal(ctx, "east", Signal{Healthy: i%2 == 0, Reason: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("2000 changes took %s: writes block the caller", d)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s2 := openFile(t, path)
	snap, _ := s2.Load(ctx)
	if got := snap.Clusters["east"].Signal.Reason; got != "1999" {
		t.Fatalf("on disk: reason %q, want the newest (1999)", got)
	}
}

const writerEnv = "HS_STORE_TEST_WRITER"

// TestMain lets the test binary be the writer process the crash test kills,
// or the other process of the HTTP baseline benchmark.
func TestMain(m *testing.M) {
	if path := os.Getenv(writerEnv); path != "" {
		writerLoop(path)
		return
	}
	if os.Getenv(sinkEnv) != "" {
		httpSink()
		return
	}
	os.Exit(m.Run())
}

func writerLoop(path string) {
	s, err := OpenFile(path, FileOptions{})
	if err != nil && s == nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		c := fullCluster(i)
		c.Fence.Sequence = uint64(i)
		s.CASFence(ctx, "east", Fence{}, *c.Fence, c.Signal)
		s.PutDrain(ctx, fmt.Sprintf("c%d", i%50), Drain{Drained: true, Reason: strings.Repeat("x", i%4000)})
		if i%3 == 0 {
			s.Flush()
		}
	}
}

// A writer killed with SIGKILL at any moment leaves a complete state file:
// every read of it while the writer runs, and after, is valid and loads.
func TestFileSurvivesKilledWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("kills writer processes")
	}
	for round := range 5 {
		path := filepath.Join(t.TempDir(), "state.json")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), writerEnv+"="+path)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		testutil.WaitFor(t, 10*time.Second, "the writer's first file", func() bool { _, err := os.Stat(path); return err == nil })
		reads := 0
		for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); reads++ {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("round %d read %d: %v", round, reads, err)
			}
			if _, err := decodeFile(b); err != nil {
				t.Fatalf("round %d read %d: the file is not a valid state: %v", round, reads, err)
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait() // reaped here; the cleanup's Kill and Wait then do nothing
		s, err := OpenFile(path, FileOptions{})
		if err != nil {
			t.Fatalf("round %d: after SIGKILL: %v", round, err)
		}
		snap, _ := s.Load(ctx)
		if snap.Clusters["east"] == nil || snap.Clusters["east"].Fence == nil {
			t.Fatalf("round %d: no fence after the kill", round)
		}
		s.Close()
		leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".state.json.tmp-*"))
		if len(leftovers) != 0 {
			t.Fatalf("round %d: temp files left after reopening: %v", round, leftovers)
		}
		t.Logf("round %d: %d reads while writing, all valid", round, reads)
	}
}

func TestGenerationDeterministic(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a := &Snapshot{Clusters: map[string]*Cluster{
		"east": {Drain: &Drain{Drained: true, At: at, Reason: "x", Replica: "a"}},
		"west": {Drain: &Drain{Drained: false, At: at}},
		"nord": {Fence: &Fence{BootID: "b", Sequence: 9}},
	}}
	// The same drains, written by another replica, with other health.
	b := &Snapshot{Clusters: map[string]*Cluster{
		"east": {Drain: &Drain{Drained: true, At: at.In(time.FixedZone("Y", -7200)), Reason: "y", Replica: "b"}, Signal: &Signal{Healthy: true}},
	}}
	if a.Generation() != b.Generation() {
		t.Fatal("the same drains give different generations")
	}
	c := &Snapshot{Clusters: map[string]*Cluster{"east": {Drain: &Drain{Drained: true, At: at.Add(time.Second)}}}}
	if a.Generation() == c.Generation() {
		t.Fatal("a later drain gives the same generation")
	}
	if (&Snapshot{}).Generation() == a.Generation() {
		t.Fatal("no drain and a drain give the same generation")
	}
}
