package healthswitch

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

func newProbeHS(t *testing.T, probes string) *HealthSwitch {
	t.Helper()
	return newTestHS(t, "cluster east 192.0.2.10 {\n"+probes+"\n}\ndetect probe\ninterval 10ms\ntimeout 5ms\nfall 2\nrise 2")
}

func clusterOf(h *HealthSwitch, name string) *clusterState { return h.engine.clusters[name] }

// Bug fixed: a probe loop that panicked exited for good and its signal
// froze. A panicking attempt now counts as a failure and the loop goes on.
func TestPanickingProbeLoopGoesOn(t *testing.T) {
	h := newProbeHS(t, "probe tcp://127.0.0.1:1")
	t.Cleanup(h.engine.stopBackground)
	cs := clusterOf(h, "east")
	pt := &probeTarget{url: "test://panics", counter: newCounter(h)}
	h.engine.mu.Lock()
	cs.probes = []*probeTarget{pt}
	h.engine.mu.Unlock()
	var calls, panicking atomic.Int64
	panicking.Store(1)
	go h.engine.probeLoop(cs, pt, func(context.Context) error {
		calls.Add(1)
		if panicking.Load() == 1 {
			panic("probe bug")
		}
		return nil
	}, nil)
	testutil.WaitFor(t, 5*time.Second, "down after panics", func() bool { return state(h, "east") == StateDown })
	if why := h.status().Clusters[0].Probe.Targets[0].LastError; !strings.Contains(why, "probe panicked: probe bug") {
		t.Errorf("last error %q", why)
	}
	panicking.Store(0)
	testutil.WaitFor(t, 5*time.Second, "up again: the loop went on", func() bool { return state(h, "east") == StateUp })
	n := calls.Load()
	testutil.WaitFor(t, 5*time.Second, "more attempts", func() bool { return calls.Load() > n+2 })
}

func newCounter(h *HealthSwitch) *hysteresis.Counter {
	return hysteresis.New(h.engine.cfg.fall, h.engine.cfg.rise)
}

// The plugin's probes, end to end through startBackground: HTTP healthy on
// 2xx only (the rule the sidecar uses too), TCP on connect.
func TestProbesDriveState(t *testing.T) {
	var code atomic.Int64
	code.Store(200)
	var ua atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua.Store(r.UserAgent())
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := newProbeHS(t, "probe "+srv.URL+"/healthz tcp://"+ln.Addr().String())
	h.engine.startBackground()
	t.Cleanup(h.engine.stopBackground)
	testutil.WaitFor(t, 5*time.Second, "up", func() bool { return state(h, "east") == StateUp })
	if got, _ := ua.Load().(string); !strings.HasPrefix(got, "healthswitch/") || !strings.HasSuffix(got, " (plugin)") {
		t.Errorf("User-Agent %q", got)
	}
	code.Store(http.StatusFound) // a redirect is not healthy
	testutil.WaitFor(t, 5*time.Second, "down on 302", func() bool { return state(h, "east") == StateDown })
	if why := h.status().Clusters[0].Probe.Reason; !strings.Contains(why, "http status 302") {
		t.Errorf("reason %q", why)
	}
	code.Store(204)
	testutil.WaitFor(t, 5*time.Second, "up on 204", func() bool { return state(h, "east") == StateUp })
	ln.Close()
	testutil.WaitFor(t, 5*time.Second, "down when the tcp port closes", func() bool { return state(h, "east") == StateDown })
	st := h.status().Clusters[0].Probe
	if st.Signal != sigDown || len(st.Targets) != 2 || st.Targets[1].State != "down" || !strings.Contains(st.Targets[1].LastError, "tcp dial") {
		t.Errorf("probe status %+v", st)
	}
}

func TestNewProberErrors(t *testing.T) {
	p := newProber(probeURL{raw: "http://127.0.0.1:1/", scheme: "http"}, 100*time.Millisecond, time.Second)
	if err := p(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "http get:") {
		t.Errorf("refused: %v", err)
	}
	if err := safeProbe(context.Background(), func(context.Context) error { return errors.New("x") }); err == nil || err.Error() != "x" {
		t.Errorf("safeProbe passes errors on: %v", err)
	}
}

func TestCombineProbes(t *testing.T) {
	a, b := &probeTarget{url: "a", counter: hysteresis.New(1, 1)}, &probeTarget{url: "b", counter: hysteresis.New(1, 1)}
	if sig, _ := combineProbes([]*probeTarget{a, b}); sig != sigUnknown {
		t.Errorf("undecided: %s", sig)
	}
	a.counter.Observe(true)
	b.counter.Observe(true)
	if sig, why := combineProbes([]*probeTarget{a, b}); sig != sigUp || why != "2 target(s) answering" {
		t.Errorf("all up: %s %s", sig, why)
	}
	b.counter.Observe(false)
	b.lastError = "refused"
	if sig, why := combineProbes([]*probeTarget{a, b}); sig != sigDown || why != "b: refused" {
		t.Errorf("one down: %s %s", sig, why)
	}
}

// ingressDouble is a TCP ingress that can die: Kill closes its listener and
// every connection it accepted, as a killed process's sockets are.
type ingressDouble struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newIngressDouble(t *testing.T, addr string) *ingressDouble {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := &ingressDouble{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.mu.Lock()
			d.conns = append(d.conns, c)
			d.mu.Unlock()
		}
	}()
	t.Cleanup(d.kill)
	return d
}

func (d *ingressDouble) kill() {
	d.ln.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func (d *ingressDouble) held() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// With `watch on` the plugin holds a connection to each probe target: the
// ingress dying closes it and the probe runs at once, long before its
// interval (an hour here); the ingress coming back is seen at once too.
func TestProbeWatchHeldConnection(t *testing.T) {
	ing := newIngressDouble(t, "127.0.0.1:0")
	addr := ing.ln.Addr().String()
	h := newTestHS(t, "cluster east 192.0.2.10 {\nprobe tcp://"+addr+"\n}\ndetect probe\ninterval 1h\ntimeout 500ms\nfall 1\nrise 1\nwatch on")
	h.engine.startBackground()
	t.Cleanup(h.engine.stopBackground)
	testutil.WaitFor(t, 5*time.Second, "the held connection", func() bool { return ing.held() > 0 })
	testutil.WaitFor(t, 5*time.Second, "up", func() bool { return state(h, "east") == StateUp })
	ing.kill()
	killed := time.Now()
	testutil.WaitFor(t, 2*time.Second, "down through the held connection", func() bool { return state(h, "east") == StateDown })
	t.Logf("ingress killed: down after %s (interval 1h)", time.Since(killed).Round(time.Microsecond))
	newIngressDouble(t, addr)
	back := time.Now()
	testutil.WaitFor(t, 5*time.Second, "up once a connection succeeds again", func() bool { return state(h, "east") == StateUp })
	t.Logf("ingress back: up after %s", time.Since(back).Round(time.Microsecond))
}

func TestParseWatch(t *testing.T) {
	if h := newTestHS(t, "cluster east 192.0.2.10\nwatch on"); !h.cfg.watch {
		t.Error("watch on: not set")
	}
	if h := newTestHS(t, "cluster east 192.0.2.10"); h.cfg.watch {
		t.Error("watch is on by default; want off")
	}
}

func TestDialAddr(t *testing.T) {
	for pu, want := range map[probeURL]string{
		{scheme: "tcp", host: "192.0.2.1:443"}:     "192.0.2.1:443",
		{scheme: "http", host: "192.0.2.1"}:        "192.0.2.1:80",
		{scheme: "https", host: "[2001:db8::1]"}:   "[2001:db8::1]:443",
		{scheme: "https", host: "ingress.example"}: "ingress.example:443",
	} {
		if got := pu.dialAddr(); got != want {
			t.Errorf("%+v: %s, want %s", pu, got, want)
		}
	}
}
