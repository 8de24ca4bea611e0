package healthswitch

import (
	"os"
	"path/filepath"
	"strings"
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

// on_down and on_up run commands with the transition in their environment.
func TestHooksRunOnTransitions(t *testing.T) {
	out := filepath.Join(t.TempDir(), "hook.log")
	script := filepath.Join(t.TempDir(), "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$HEALTHSWITCH_CLUSTER $HEALTHSWITCH_ACTION $HEALTHSWITCH_STATE\" >> "+out+"\n"), 0o755)
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n on_down "+script+"\n on_up "+script+"\n}\nstale 1h")
	h.engine.mu.Lock()
	h.engine.startOutboxes()
	h.engine.mu.Unlock()
	defer close(h.engine.done)
	post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	post(t, h, "/v1/report", body(t, "east", "b", 2, true), pushKey, time.Now())
	want := "east stop down\neast resume up\n"
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hook log %q, want %q", b, want)
		}
		if strings.Count(string(b), "\n") > 2 {
			t.Fatalf("hook ran too often: %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
