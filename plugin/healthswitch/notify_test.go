package healthswitch

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

// peerDouble is a test double of a peer's push API: it answers with code
// and records the reports it accepted, by cluster.
type peerDouble struct {
	srv   *httptest.Server
	code  atomic.Int64
	mu    sync.Mutex
	got   map[string][]uint64 // cluster: sequences accepted, in order
	tried map[string]uint64   // cluster: the newest sequence of any attempt, refused too
	hdrs  []http.Header
}

func newPeerDouble(t *testing.T) *peerDouble {
	p := &peerDouble{got: map[string][]uint64{}, tried: map[string]uint64{}}
	p.code.Store(http.StatusNoContent)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		code := int(p.code.Load())
		rep, err := report.Decode(b)
		if err != nil {
			t.Errorf("peer got a bad report: %v", err)
			return
		}
		p.mu.Lock()
		p.tried[rep.Cluster] = max(p.tried[rep.Cluster], rep.Sequence)
		p.mu.Unlock()
		if code/100 == 2 {
			p.mu.Lock()
			p.got[rep.Cluster] = append(p.got[rep.Cluster], rep.Sequence)
			p.hdrs = append(p.hdrs, r.Header.Clone())
			p.mu.Unlock()
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *peerDouble) sequences(cluster string) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint64(nil), p.got[cluster]...)
}

// Bug fixed: a dead peer used to build a FIFO backlog of stale reports. A
// peer that comes back now gets the newest report of each cluster only.
func TestDeadPeerGetsNewestReportPerCluster(t *testing.T) {
	peer := newPeerDouble(t)
	peer.code.Store(http.StatusServiceUnavailable)
	h := newPushHS(t, "peers "+peer.srv.URL+"/\nstale 1h")
	t.Cleanup(h.engine.stopBackground)
	for seq := uint64(1); seq <= 30; seq++ {
		if rec := post(t, h, "/v1/report", body(t, "east", "b", seq, seq%2 == 0), pushKey, time.Now()); rec.Code != 204 {
			t.Fatalf("report %d: %d", seq, rec.Code)
		}
		if seq <= 10 {
			post(t, h, "/v1/report", body(t, "west", "b", seq, true), pushKey, time.Now())
		}
	}
	// Wait until the newest report of each cluster has been tried: an
	// attempt still in flight when the peer comes back then carries it.
	testutil.WaitFor(t, 5*time.Second, "the dead peer tried the newest reports", func() bool {
		peer.mu.Lock()
		defer peer.mu.Unlock()
		return peer.tried["east"] == 30 && peer.tried["west"] == 10 && h.status().Peers[0].Failures >= 2
	})
	if st := h.status().Peers[0]; st.Acknowledged || st.Code != 503 {
		t.Errorf("peer status while dead: %+v", st)
	}
	peer.code.Store(http.StatusNoContent)
	testutil.WaitFor(t, 5*time.Second, "the newest reports at the peer", func() bool {
		e, w := peer.sequences("east"), peer.sequences("west")
		return len(e) > 0 && len(w) > 0
	})
	testutil.WaitFor(t, 5*time.Second, "the peer acknowledged", func() bool { return h.status().Peers[0].Acknowledged })
	if e, w := peer.sequences("east"), peer.sequences("west"); len(e) != 1 || e[0] != 30 || len(w) != 1 || w[0] != 10 {
		t.Errorf("peer got east %v, west %v; want only the newest of each: [30], [10]", e, w)
	}
	st := h.status().Peers[0]
	if st.URL != peer.srv.URL || st.Code != 204 || st.LastOK.IsZero() || st.Dropped < 30 {
		t.Errorf("peer status: %+v", st)
	}
	if hd := peer.hdrs[0]; hd.Get(report.HeaderForwarded) != "1" || hd.Get(report.HeaderSignature) == "" {
		t.Errorf("forwarded headers: %v", hd)
	}
}

// A forwarded report is not forwarded again, and a drain is forwarded
// signed anew with the admin key.
func TestForwardedNotForwardedAgain(t *testing.T) {
	peer := newPeerDouble(t)
	var drains atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/clusters/east/drain", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if report.Verify([]byte("admin-key-0123456789"), r.Header.Get(report.HeaderTimestamp), r.Header.Get(report.HeaderSignature), b, time.Now(), time.Minute) == nil {
			drains.Add(1)
		}
	})
	mux.Handle("/", peer.srv.Config.Handler)
	peer.srv.Config.Handler = mux
	admin := writeKey(t, "admin-key-0123456789")
	h := newPushHS(t, "peers "+peer.srv.URL+"\nadmin_key_file "+admin)
	t.Cleanup(h.engine.stopBackground)
	b := body(t, "east", "b", 1, true)
	req := httptest.NewRequest(http.MethodPost, "/v1/report", bytes.NewReader(b))
	report.SignRequest(req, pushKey, time.Now(), b)
	req.Header.Set(report.HeaderForwarded, "1")
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	if rec.Code != 204 {
		t.Fatalf("forwarded report: %d", rec.Code)
	}
	if rec := post(t, h, "/v1/clusters/east/drain", adminBody("drain", "east"), []byte("admin-key-0123456789"), time.Now()); rec.Code != 200 {
		t.Fatalf("drain: %d %s", rec.Code, rec.Body)
	}
	testutil.WaitFor(t, 5*time.Second, "the drain at the peer", func() bool { return drains.Load() == 1 })
	if got := peer.sequences("east"); len(got) != 0 {
		t.Errorf("a forwarded report was forwarded again: %v", got)
	}
}

// hookDouble is an on_down/on_up URL: it records the state of every event
// it gets; the first request waits for release.
type hookDouble struct {
	srv     *httptest.Server
	release chan struct{}
	started chan struct{}
	mu      sync.Mutex
	states  []State
}

func newHookDouble(t *testing.T) *hookDouble {
	d := &hookDouble{release: make(chan struct{}), started: make(chan struct{}, 1)}
	var first atomic.Bool
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev Event
		json.NewDecoder(r.Body).Decode(&ev)
		if first.CompareAndSwap(false, true) {
			d.started <- struct{}{}
			<-d.release
		}
		d.mu.Lock()
		d.states = append(d.states, ev.To)
		d.mu.Unlock()
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *hookDouble) seen() []State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]State(nil), d.states...)
}

// Bug fixed: under flapping the hook queue (16 jobs) dropped the newest job,
// so the hook for the state the cluster ended in could be skipped. Now a
// newer transition replaces the hook not yet run: the last hook run is the
// one of the final state.
func TestHookOrderUnderFlapping(t *testing.T) {
	for _, final := range []bool{false, true} {
		d := newHookDouble(t)
		h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n on_down "+d.srv.URL+"\n on_up "+d.srv.URL+"\n}\nstale 1h")
		h.engine.startBackground()
		post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
		<-d.started // the first hook is running (and stuck) now
		seq := uint64(2)
		for i := range 40 {
			healthy := i%2 == 0
			if i == 39 {
				healthy = final
			}
			post(t, h, "/v1/report", body(t, "east", "b", seq, healthy), pushKey, time.Now())
			seq++
		}
		want := StateDown
		if final {
			want = StateUp
		}
		if s := state(h, "east"); s != want {
			t.Fatalf("east %s, want %s", s, want)
		}
		close(d.release)
		testutil.WaitFor(t, 5*time.Second, "the hook of the final state", func() bool {
			s := d.seen()
			return len(s) >= 2 && s[len(s)-1] == want
		})
		h.engine.stopBackground()
		if s := d.seen(); len(s) != 2 || s[0] != StateDown {
			t.Errorf("hooks ran for %v; want the first (down) and then only the final %s", s, want)
		}
	}
}

// Notify targets: signed notifications, and whether the ingress
// acknowledged shown per target in /v1/status.
func TestNotifyAcknowledgedInStatus(t *testing.T) {
	var code atomic.Int64
	code.Store(http.StatusNoContent)
	var got atomic.Value
	ingress := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := report.Verify(pushKey, r.Header.Get(report.HeaderTimestamp), r.Header.Get(report.HeaderSignature), b, time.Now(), time.Minute); err != nil {
			t.Errorf("notification not signed: %v", err)
		}
		var n report.Notification
		json.Unmarshal(b, &n)
		got.Store(n.Action)
		w.WriteHeader(int(code.Load()))
	}))
	defer ingress.Close()
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n notify "+ingress.URL+"/v1/distribution\n}\nstale 1h")
	h.engine.startBackground()
	t.Cleanup(h.engine.stopBackground)
	if n := h.status().Clusters[0].Notify[0]; n.Acknowledged || !n.At.IsZero() {
		t.Errorf("before any notification: %+v", n)
	}
	post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	testutil.WaitFor(t, 5*time.Second, "the stop acknowledged", func() bool {
		n := h.status().Clusters[0].Notify[0]
		return n.Acknowledged && n.Code == 204
	})
	if got.Load() != report.ActionStop {
		t.Errorf("action %v", got.Load())
	}
	code.Store(http.StatusBadRequest) // given up, not retried
	post(t, h, "/v1/report", body(t, "east", "b", 2, true), pushKey, time.Now())
	testutil.WaitFor(t, 5*time.Second, "the refusal shown", func() bool {
		n := h.status().Clusters[0].Notify[0]
		return !n.Acknowledged && n.Code == 400
	})
	if n := h.status().Clusters[0].Notify[0]; n.Failures != 1 || n.LastErr == "" || n.URL != ingress.URL+"/v1/distribution" {
		t.Errorf("after a 400: %+v", n)
	}
}

// A down <-> drained transition changes nothing for the ingress.
func TestNotifySkipsDownDrained(t *testing.T) {
	var n atomic.Int64
	ingress := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
	defer ingress.Close()
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n notify "+ingress.URL+"\n}\nstale 1h")
	h.engine.startBackground()
	t.Cleanup(h.engine.stopBackground)
	post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	testutil.WaitFor(t, 5*time.Second, "the stop", func() bool { return n.Load() == 1 })
	h.engine.setDrained("east", true)
	h.engine.setDrained("east", false)
	post(t, h, "/v1/report", body(t, "east", "b", 2, true), pushKey, time.Now())
	testutil.WaitFor(t, 5*time.Second, "the resume", func() bool { return n.Load() == 2 })
	if st := h.status().Clusters[0].Notify[0]; !st.Acknowledged || st.Failures != 0 {
		t.Errorf("status %+v", st)
	}
}
