package healthswitch

import (
	"testing"
	"time"
)

func TestReadyWaitsForFirstSignal(t *testing.T) {
	h := newPushHS(t, "ready_timeout 1h")
	h.engine.started = time.Now()
	if h.Ready() {
		t.Fatal("ready before any cluster had a signal")
	}
	post(t, h, "/v1/report", body(t, "east", "b", 1, true), pushKey, time.Now())
	if h.Ready() {
		t.Fatal("ready with west still silent")
	}
	post(t, h, "/v1/report", body(t, "west", "b", 1, false), pushKey, time.Now())
	if !h.Ready() {
		t.Error("not ready after every cluster reported")
	}
}

func TestReadyTimeout(t *testing.T) {
	h := newPushHS(t, "ready_timeout 10ms")
	h.engine.started = time.Now().Add(-time.Second)
	if !h.Ready() {
		t.Error("not ready after ready_timeout")
	}
}
