package healthswitch

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns/caddy"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/store"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

func TestParseStore(t *testing.T) {
	pw := writeKey(t, "secret")
	cfg, err := parseString(t, `healthswitch {
    cluster a 192.0.2.1
    store etcd http://127.0.0.1:2379 https://10.0.0.2:2379 {
        prefix /hs/prod
        username hs
        password_file `+pw+`
        replica dns-a
        timeout 500ms
        presence_ttl 4s
    }
    ttl 7
}`)
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.store.etcd
	if cfg.store.kind != storeEtcd || len(o.Endpoints) != 2 || o.Prefix != "/hs/prod" || o.Username != "hs" ||
		o.PasswordFile != pw || o.Replica != "dns-a" || o.OpTimeout != 500*time.Millisecond || o.PresenceTTL != 4*time.Second || cfg.ttl != 7 {
		t.Errorf("store etcd: %+v, ttl %d", o, cfg.ttl)
	}
	cfg, err = parseString(t, "healthswitch {\n cluster a 192.0.2.1\n store etcd http://127.0.0.1:2379\n}")
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if o := cfg.store.etcd; o.Prefix != "/healthswitch" || o.OpTimeout != defaultStoreTimeout || o.Replica != host {
		t.Errorf("store etcd defaults: %+v", o)
	}
	cfg, err = parseString(t, "healthswitch {\n cluster a 192.0.2.1\n state state.json\n}")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.store.kind != storeFile || !filepath.IsAbs(cfg.store.path) {
		t.Errorf("state: %+v", cfg.store)
	}
}

func TestParseStoreErrors(t *testing.T) {
	for in, want := range map[string]string{
		"state":                                 "state needs one file",
		"state a b":                             "state needs one file",
		"state a\n store etcd http://x:1":       "Testfile:4 - Error during parsing: store: the store is already set on line 3",
		"store etcd http://x:1\n state a":       "Testfile:4 - Error during parsing: state: the store is already set on line 3",
		"store etcd":                            "store needs a kind and endpoints",
		"store redis http://x:1":                "store needs a kind and endpoints",
		"store etcd ftp://x:1":                  `"ftp://x:1" is not an endpoint`,
		"store etcd http://x:1 {\n bogus 1\n }": `Testfile:4 - Error during parsing: store etcd: unknown property "bogus"`,
		"store etcd http://x:1 {\n tls a b\n }": "tls needs CERT KEY CA",
		"store etcd http://x:1 {\n tls /nope /nope /nope\n }": "store etcd: tls:",
		"store etcd http://x:1 {\n password_file /nope\n }":   "password_file",
		"store etcd http://x:1 {\n timeout soon\n }":          `timeout "soon" is not a positive duration`,
		"store etcd http://x:1 {\n presence_ttl 1s\n }":       "presence_ttl 1s is under 2s",
		"store etcd http://x:1 {\n prefix nope\n }":           `prefix "nope" must start with /`,
		"store etcd http://x:1 {\n replica a/b\n }":           "may not contain /",
	} {
		_, err := parseString(t, "healthswitch {\n cluster a 192.0.2.1\n "+in+"\n}")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// The SOA serial depends on the configuration and the drains only: two
// engines (replicas) with the same drains answer the same serial, whenever
// they started; a drain changes it, and undoing it brings it back.
func TestSerialFollowsDrains(t *testing.T) {
	cfg, err := parseString(t, "healthswitch {\n cluster a 192.0.2.1\n cluster b 192.0.2.2\n}")
	if err != nil {
		t.Fatal(err)
	}
	e1, e2 := newEngine(cfg), newEngine(cfg)
	e2.serial = tableSerial(e1.table) // what the configuration gives both
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	snap := &store.Snapshot{Clusters: map[string]*store.Cluster{"a": {Drain: &store.Drain{Drained: true, At: at}}}}
	e1.restore(&store.Snapshot{})
	base := tableSerial(e1.table)
	e1.restore(snap)
	e2.restore(snap)
	if s1, s2 := tableSerial(e1.table), tableSerial(e2.table); s1 != s2 || s1 == base {
		t.Errorf("serials with the same drain: %d and %d; without: %d", s1, s2, base)
	}
	if got := soaRecord(e1.snap.Load().zones["svc1.net."])[0].(*dns.SOA).Serial; got != tableSerial(e1.table) {
		t.Errorf("the SOA answered carries serial %d, want %d", got, tableSerial(e1.table))
	}
	e1.mu.Lock()
	e1.applyDrain(e1.clusters["a"], store.Drain{}, cause{})
	e1.mu.Unlock()
	if s := tableSerial(e1.table); s != base {
		t.Errorf("serial after undrain %d, want %d again", s, base)
	}
}

// twoReplicas starts two instances in this process, as two replicas
// sharing a prefix on etcd (their own server blocks, push listeners and
// replica names).
func twoReplicas(t *testing.T, endpoints []string) (*HealthSwitch, *HealthSwitch) {
	key := writeKey(t, "0123456789abcdef0123")
	admin := writeKey(t, "admin-key-0123456789")
	var hs []*HealthSwitch
	for i := range 2 {
		c := caddy.NewTestController("dns", fmt.Sprintf(`healthswitch svc1.net {
    cluster east 192.0.2.10 {
        key_file %s
    }
    cluster west 198.51.100.10 {
        key_file %s
    }
    admin_key_file %s
    stale 1h
    listen 127.0.0.1:%d
    store etcd %s {
        prefix /hs-unit-%d
        replica u%d
    }
}`, key, key, admin, testutil.FreePort(t), strings.Join(endpoints, " "), os.Getpid(), i))
		c.ServerBlockKeys = []string{fmt.Sprintf("svc1.net.:%d", 5300+i)}
		cfg, err := parse(c)
		if err != nil {
			t.Fatal(err)
		}
		h := newHealthSwitch(cfg)
		if err := h.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.stop() })
		hs = append(hs, h)
	}
	return hs[0], hs[1]
}

// Two replicas in one process under -race: concurrent reports and drains
// through either converge on both, and of one report offered to both at
// once exactly one accepts it.
func TestStoreEtcdReplicasInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	etcd := testutil.StartEtcd(t, 1)
	h1, h2 := twoReplicas(t, etcd.Endpoints())
	key := []byte("0123456789abcdef0123")
	var wg sync.WaitGroup
	var accepted, replays atomic.Int64
	for seq := uint64(1); seq <= 40; seq++ {
		b := body(t, "east", "b1", seq, seq%2 == 1)
		ts := time.Now()
		for _, h := range []*HealthSwitch{h1, h2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch code := post(t, h, "/v1/report", b, key, ts).Code; code {
				case 204:
					accepted.Add(1)
				case 409:
					replays.Add(1)
				default:
					t.Errorf("report %d: %d", seq, code)
				}
			}()
		}
		wg.Wait()
	}
	if accepted.Load() != 40 || replays.Load() != 40 {
		t.Errorf("40 reports offered to both replicas at once: %d accepted, %d refused; want 40 and 40", accepted.Load(), replays.Load())
	}
	// The last report (40) is unhealthy: east down on both.
	testutil.WaitFor(t, 5*time.Second, "east down on both", func() bool {
		return state(h1, "east") == StateDown && state(h2, "east") == StateDown
	})
	if rec := post(t, h2, "/v1/clusters/west/drain", []byte(`{"action":"drain","cluster":"west","reason":"OPS-1"}`), []byte("admin-key-0123456789"), time.Now()); rec.Code != 200 {
		t.Fatalf("drain through h2: %d %s", rec.Code, rec.Body)
	}
	testutil.WaitFor(t, 5*time.Second, "west drained on h1", func() bool { return state(h1, "west") == StateDrained })
	gen := func(h *HealthSwitch) uint32 {
		h.engine.mu.Lock()
		defer h.engine.mu.Unlock()
		return h.engine.drainGen
	}
	if g1, g2 := gen(h1), gen(h2); g1 != g2 {
		t.Errorf("drain generations (mixed into the SOA serial) differ: %d and %d", g1, g2)
	}
	st := h1.status().Store
	if st == nil || st.Kind != "etcd" || !st.Connected || st.Revision == 0 {
		t.Errorf("status store: %+v", st)
	}
}

// A cluster whose last signal before the restart was down stays down, even
// when that signal is older than stale and the cluster has a probe that has
// not decided yet (which would otherwise leave it unknown, and answered),
// until a fresh signal; a healthy signal older than stale counts as stale.
func TestRestoredSignalsJudgedByAge(t *testing.T) {
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n probe http://192.0.2.10/\n}\ncluster west 198.51.100.10 {\n key_file KEY\n}\nstale 1s")
	e := h.engine
	old := time.Now().Add(-time.Hour)
	e.restore(&store.Snapshot{Clusters: map[string]*store.Cluster{
		"east": {Signal: &store.Signal{Healthy: false, Reason: "web: status 500", ReceivedAt: old}, Fence: &store.Fence{BootID: "b", Sequence: 7, SignedAt: old}},
		"west": {Signal: &store.Signal{Healthy: true, ReceivedAt: old}},
	}})
	v := e.view()
	if st := v.clusters[0]; st.State != StateDown || !strings.Contains(st.Reason, "down before restart") {
		t.Errorf("east after restore: %s (%s), want held down", st.State, st.Reason)
	}
	if st := v.clusters[1]; st.Sidecar.Signal != sigStale {
		t.Errorf("west's hour-old healthy signal: %s, want stale", st.Sidecar.Signal)
	}
	if rec := post(t, h, "/v1/report", body(t, "east", "b", 7, true), []byte("0123456789abcdef0123"), time.Now()); rec.Code != 409 {
		t.Errorf("a report at the restored fence: %d, want 409", rec.Code)
	}
	if rec := post(t, h, "/v1/report", body(t, "east", "b", 8, true), []byte("0123456789abcdef0123"), time.Now()); rec.Code != 204 {
		t.Fatalf("a fresh report: %d", rec.Code)
	}
	if s := state(h, "east"); s != StateUp {
		t.Errorf("east after a fresh healthy report: %s", s)
	}
}
