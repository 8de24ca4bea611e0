package healthswitch

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// newBlock is an instance of one server block as setup makes it, listening
// on listen; block is the server block's identity.
func newBlock(t *testing.T, block, listen, extra string) *HealthSwitch {
	t.Helper()
	h := newPushHS(t, "listen "+listen+"\nstale 1h\n"+extra)
	h.cfg.block = block
	return h
}

func startBlock(t *testing.T, h *HealthSwitch) {
	t.Helper()
	if err := h.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.stop() })
}

// apiState asks the push API at addr for a cluster's state.
func apiState(t *testing.T, addr, cluster string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc statusDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range doc.Clusters {
		if c.Name == cluster {
			return string(c.State)
		}
	}
	return ""
}

// A reload: the new instance takes over the listener and the state; the
// old one's stop leaves both serving; the last stop frees the port.
func TestListenerSurvivesReload(t *testing.T) {
	old := newBlock(t, "svc1.net.:53", "127.0.0.1:0", "")
	startBlock(t, old)
	addr := old.Addr()
	post(t, old, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	if err := old.onRestart(); err != nil {
		t.Fatal(err)
	}
	next := newBlock(t, "svc1.net.:53", "127.0.0.1:0", "ttl 9")
	if next.gen != old.gen+1 {
		t.Fatalf("gen %d after %d", next.gen, old.gen)
	}
	startBlock(t, next)
	if next.Addr() != addr {
		t.Errorf("new instance on %s, want the same socket %s", next.Addr(), addr)
	}
	if s := state(next, "east"); s != StateDown {
		t.Errorf("state not handed over: east %s", s)
	}
	old.stop()
	if got := apiState(t, addr, "east"); got != "down" {
		t.Errorf("after the old stop, the API answers east %q", got)
	}
	// A report to the shared socket lands in the new instance.
	post(t, next, "/v1/report", body(t, "east", "b", 2, true), pushKey, time.Now())
	if got := apiState(t, addr, "east"); got != "up" {
		t.Errorf("east %q", got)
	}
	next.stop()
	testutil.WaitFor(t, 2*time.Second, "the port freed", func() bool {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
		}
		return err == nil
	})
}

// A failed reload: the instances of the failed load that started are
// stopped, and the old one serves its block and address again.
func TestFailedReloadRestores(t *testing.T) {
	old := newBlock(t, "svc1.net.:53", "127.0.0.1:0", "")
	startBlock(t, old)
	addr := old.Addr()
	old.onRestart()
	failed := newBlock(t, "svc1.net.:53", "127.0.0.1:0", "")
	startBlock(t, failed)
	post(t, failed, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	if err := old.onRestartFailed(); err != nil {
		t.Fatal(err)
	}
	if !failed.engine.stopped {
		t.Error("the failed load's instance still runs")
	}
	if got := apiState(t, addr, "east"); got != "unknown" {
		t.Errorf("after the failed reload the API answers from the failed instance: east %q", got)
	}
	registry.Lock()
	e := registry.engines["svc1.net.:53"]
	registry.Unlock()
	if e != old.engine {
		t.Error("the old instance did not take its block back")
	}
}

// A reload that moves the push API frees the old port.
func TestAddressMoveFreesOldPort(t *testing.T) {
	p1, p2 := testutil.FreePort(t), testutil.FreePort(t)
	a1, a2 := fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("127.0.0.1:%d", p2)
	old := newBlock(t, "svc1.net.:53", a1, "")
	startBlock(t, old)
	old.onRestart()
	next := newBlock(t, "svc1.net.:53", a2, "")
	startBlock(t, next)
	old.stop()
	testutil.WaitFor(t, 2*time.Second, "the old port freed", func() bool {
		ln, err := net.Listen("tcp", a1)
		if err == nil {
			ln.Close()
		}
		return err == nil
	})
	if next.Addr() != a2 {
		t.Errorf("new address %q", next.Addr())
	}
}

// Bug fixed: instances were keyed by their zones, so two server blocks with
// the same zones shared state. They are keyed by server block now.
func TestSameZonesTwoBlocksDoNotShareState(t *testing.T) {
	p1, p2 := testutil.FreePort(t), testutil.FreePort(t)
	a := newBlock(t, "svc1.net.:53", fmt.Sprintf("127.0.0.1:%d", p1), "")
	startBlock(t, a)
	post(t, a, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	b := newBlock(t, "svc1.net.:1053", fmt.Sprintf("127.0.0.1:%d", p2), "")
	if strings.Join(a.cfg.zones, " ") != strings.Join(b.cfg.zones, " ") {
		t.Fatalf("zones differ: %v %v", a.cfg.zones, b.cfg.zones)
	}
	startBlock(t, b)
	if s := state(b, "east"); s != StateUnknown {
		t.Errorf("the second block took over the first's state: east %s", s)
	}
	if s := state(a, "east"); s != StateDown {
		t.Errorf("first block: east %s", s)
	}
}

// Two blocks of one load on one address is a configuration error.
func TestListenConflict(t *testing.T) {
	a := newBlock(t, "a.:53", "127.0.0.1:0", "")
	startBlock(t, a)
	b := newBlock(t, "b.:53", "127.0.0.1:0", "")
	t.Cleanup(func() { b.stop() })
	if err := b.start(); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second block on one address: %v", err)
	}
	if _, err := listen("256.0.0.1:1", nil, apiConfig{}); err == nil {
		t.Error("bad address bound")
	}
}

// The listener answers 503 once no instance serves it.
func TestListenerWithoutInstance(t *testing.T) {
	sl := &sharedListener{}
	rec := httptest.NewRecorder()
	sl.ServeHTTP(rec, localRequest("/v1/status"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d", rec.Code)
	}
}
