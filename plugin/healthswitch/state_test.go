package healthswitch

import (
	"errors"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// The engine answers in plain errors; the handlers map them.
func TestEngineErrors(t *testing.T) {
	h := newPushHS(t, "")
	e := h.engine
	if err := e.setDrained("nope", true); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("setDrained unknown: %v", err)
	}
	rep := &report.Report{Version: 1, Cluster: "nope", BootID: "b", Sequence: 1, SentAt: time.Now(), Healthy: true}
	if err := e.applyReport(rep, time.Now(), time.Now()); !errors.Is(err, ErrUnknownCluster) {
		t.Errorf("applyReport unknown: %v", err)
	}
	rep.Cluster = "east"
	if err := e.applyReport(rep, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.applyReport(rep, time.Now(), time.Now()); !errors.Is(err, ErrReplay) {
		t.Errorf("same sequence again: %v", err)
	}
	signed := time.Now()
	if err := e.drain("east", true, opRequest{signedAt: signed, signature: "sig"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.drain("east", true, opRequest{signedAt: signed.Add(time.Second), signature: "sig"}, time.Minute); !errors.Is(err, ErrReplay) {
		t.Errorf("same signature again: %v", err)
	}
	if err := e.drain("east", false, opRequest{signedAt: signed, signature: "sig2"}, time.Minute); !errors.Is(err, ErrReplay) {
		t.Errorf("signed no later than the last applied: %v", err)
	}
	if got := e.operatorFenceOf("east"); !got.Equal(signed) {
		t.Errorf("operator fence %v, want %v", got, signed)
	}
	for err, code := range map[error]int{ErrReplay: 409, ErrUnknownCluster: 404, errors.New("x"): 500} {
		if got := engineError(err).status; got != code {
			t.Errorf("%v -> %d, want %d", err, got, code)
		}
	}
}

// Subscribers get every transition in order; the engine never waits for
// them: one that falls behind is dropped, its channel closed.
func TestSubscribe(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	e := h.engine
	fast, cancelFast := e.subscribe(8)
	slow, _ := e.subscribe(1)
	post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	post(t, h, "/v1/report", body(t, "east", "b", 2, true), pushKey, time.Now())
	for _, want := range []State{StateDown, StateUp} {
		select {
		case ev := <-fast:
			if ev.Cluster != "east" || ev.To != want {
				t.Errorf("event %+v, want east to %s", ev, want)
			}
		default:
			t.Fatalf("no event for %s", want)
		}
	}
	if ev, ok := <-slow; !ok || ev.To != StateDown {
		t.Errorf("slow subscriber's first event: %+v %v", ev, ok)
	}
	if _, ok := <-slow; ok {
		t.Error("a subscriber that fell behind was not dropped")
	}
	cancelFast()
	cancelFast()
	if _, ok := <-fast; ok {
		t.Error("cancelled subscription still open")
	}
	last, _ := e.subscribe(1)
	e.stopBackground()
	if _, ok := <-last; ok {
		t.Error("subscription open after the engine stopped")
	}
	if after, _ := e.subscribe(1); after != nil {
		if _, ok := <-after; ok {
			t.Error("subscribing to a stopped engine")
		}
	}
	if got := e.eventsSince(2); len(got) != 1 || got[0].To != StateUp {
		t.Errorf("eventsSince(2): %+v", got)
	}
}

// Slow start republishes while a recovered cluster ramps in.
func TestSlowStartTicks(t *testing.T) {
	h := newPushHS(t, "slow_start 1s\nstale 1h")
	e := h.engine
	e.startBackground()
	t.Cleanup(e.stopBackground)
	post(t, h, "/v1/report", body(t, "east", "b", 1, true), pushKey, time.Now())
	post(t, h, "/v1/report", body(t, "east", "b", 2, false), pushKey, time.Now())
	post(t, h, "/v1/report", body(t, "east", "b", 3, true), pushKey, time.Now())
	epoch := e.snap.Load().epoch
	e.tick()
	if e.snap.Load().epoch != epoch+1 {
		t.Error("tick did not republish while ramping")
	}
}

// Reload hand-over copies state cluster by cluster, for clusters that
// remain, and arms the stale timer again.
func TestInherit(t *testing.T) {
	old := newPushHS(t, "stale 1h")
	post(t, old, "/v1/report", body(t, "east", "b", 7, false), pushKey, time.Now())
	old.engine.setDrained("west", true)
	next := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n}\nstale 1h")
	next.engine.inherit(old.engine)
	next.engine.startBackground()
	t.Cleanup(next.engine.stopBackground)
	if s := state(next, "east"); s != StateDown {
		t.Errorf("east %s", s)
	}
	if rec := post(t, next, "/v1/report", body(t, "east", "b", 7, true), pushKey, time.Now()); rec.Code != 409 {
		t.Errorf("replay counter not handed over: %d", rec.Code)
	}
	if next.engine.epoch <= old.engine.epoch || len(next.engine.eventsSince(0)) == 0 {
		t.Error("epoch and events not handed over")
	}
}
