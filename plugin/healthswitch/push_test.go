package healthswitch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

var pushKey = []byte("0123456789abcdef0123")

func newPushHS(t *testing.T, extra string) *HealthSwitch {
	t.Helper()
	return newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n}\ncluster west 198.51.100.10 {\n key_file KEY\n}\n"+extra)
}

func body(t *testing.T, cluster, boot string, seq uint64, healthy bool) []byte {
	t.Helper()
	r := report.Report{Version: 1, Cluster: cluster, BootID: boot, Sequence: seq, SentAt: time.Now().UTC(), Healthy: healthy, IntervalMS: 100}
	if !healthy {
		r.Checks = []report.Check{{Name: "web", Kind: "http", Critical: true, ObservedAt: time.Now().UTC(), Detail: "status 500"}}
	}
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends a report signed with key at ts; a nil key sends it unsigned.
func post(t *testing.T, h *HealthSwitch, path string, b []byte, key []byte, ts time.Time) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(b))
	if key != nil {
		report.SignRequest(req, key, ts, b)
	}
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	return rec
}

func state(h *HealthSwitch, cluster string) State {
	for _, c := range h.engine.view().clusters {
		if c.Name == cluster {
			return c.State
		}
	}
	return ""
}

func TestReportAcceptedAndApplied(t *testing.T) {
	h := newPushHS(t, "")
	now := time.Now()
	if rec := post(t, h, "/v1/report", body(t, "east", "b1", 1, false), pushKey, now); rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if s := state(h, "east"); s != StateDown {
		t.Fatalf("east %s after an unhealthy report", s)
	}
	m, _ := query(t, h, "svc1.net.", 1, false)
	if got := addrs(m); len(got) != 1 || got[0] != "198.51.100.10" {
		t.Errorf("answers %v", got)
	}
	if rec := post(t, h, "/v1/report", body(t, "east", "b1", 2, true), pushKey, now); rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if s := state(h, "east"); s != StateUp {
		t.Fatalf("east %s after a healthy report", s)
	}
	// The events show both transitions with their times.
	req := localRequest("/v1/events")
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	var ev struct{ Events []Event }
	if err := json.Unmarshal(rec.Body.Bytes(), &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Events) != 2 || ev.Events[0].To != StateDown || ev.Events[1].To != StateUp || ev.Events[0].ReceivedAt.IsZero() ||
		!strings.Contains(ev.Events[0].Reason, "web: status 500") {
		t.Errorf("events: %+v", ev.Events)
	}
}

func TestReportRejections(t *testing.T) {
	h := newPushHS(t, "")
	now := time.Now()
	good := body(t, "east", "b1", 5, false)
	if rec := post(t, h, "/v1/report", good, pushKey, now); rec.Code != http.StatusNoContent {
		t.Fatalf("first report: %d %s", rec.Code, rec.Body)
	}
	epoch := h.snap.Load().epoch
	otherKey := []byte("another-key-of-16-bytes")
	big := append([]byte(`{"version":1,"cluster":"east","boot_id":"b1","sequence":9,"detail":"`), bytes.Repeat([]byte("x"), report.MaxBodySize)...)
	tests := []struct {
		name   string
		body   []byte
		key    []byte
		ts     time.Time
		status int
		reason string
	}{
		{"unsigned", body(t, "east", "b1", 6, true), nil, now, 401, "signature"},
		{"signed with another key", body(t, "east", "b1", 6, true), otherKey, now, 401, "signature"},
		{"west's key for east", body(t, "east", "b1", 6, true), []byte("west-key-is-different"), now, 401, "signature"},
		{"unknown cluster", body(t, "north", "b1", 6, true), pushKey, now, 404, "unknown_cluster"},
		{"replayed", good, pushKey, now, 409, "replay"},
		{"old sequence", body(t, "east", "b1", 4, true), pushKey, now, 409, "replay"},
		{"new boot signed earlier", body(t, "east", "b0", 100, true), pushKey, now.Add(-time.Second), 409, "replay"},
		{"stale timestamp", body(t, "east", "b1", 6, true), pushKey, now.Add(-time.Minute), 409, "skew"},
		{"future timestamp", body(t, "east", "b1", 6, true), pushKey, now.Add(time.Minute), 409, "skew"},
		{"oversized", big, pushKey, now, 413, "too_large"},
		{"malformed", []byte(`{"version":1,`), pushKey, now, 400, "malformed"},
		{"wrong version", bytes.Replace(body(t, "east", "b1", 6, true), []byte(`"version":1`), []byte(`"version":2`), 1), pushKey, now, 400, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := post(t, h, "/v1/report", tc.body, tc.key, tc.ts)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			var e map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["reason"] != tc.reason || e["error"] == "" {
				t.Errorf("body %s, want JSON error with reason %q", rec.Body, tc.reason)
			}
			if s := state(h, "east"); s != StateDown {
				t.Errorf("east is %s after a rejected report", s)
			}
			if got := h.snap.Load().epoch; got != epoch {
				t.Errorf("epoch moved %d -> %d", epoch, got)
			}
		})
	}
}

func TestStaleSidecar(t *testing.T) {
	tests := []struct {
		name, detect string
		want         State
	}{
		{"sidecar: stale means down", "detect sidecar", StateDown},
		{"both, no probe: stale means down", "", StateDown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newPushHS(t, "stale 50ms\ninterval 20ms\ntimeout 10ms\n"+tc.detect)
			if rec := post(t, h, "/v1/report", body(t, "east", "b1", 1, true), pushKey, time.Now()); rec.Code != 204 {
				t.Fatal(rec.Code)
			}
			if s := state(h, "east"); s != StateUp {
				t.Fatalf("east %s", s)
			}
			testutil.WaitFor(t, 2*time.Second, "east "+string(tc.want)+" after silence", func() bool { return state(h, "east") == tc.want })
		})
	}
}

// The truth table of detect both, as written in README.md.
func TestDetectBothTruthTable(t *testing.T) {
	tests := []struct {
		sidecar, probe signal
		want           State
	}{
		{sigUnknown, sigUnknown, StateUnknown},
		{sigUp, sigUnknown, StateUp},
		{sigUnknown, sigUp, StateUp},
		{sigUp, sigUp, StateUp},
		{sigDown, sigUp, StateDown},
		{sigUp, sigDown, StateDown},
		{sigDown, sigDown, StateDown},
		{sigStale, sigUp, StateUp},
		{sigStale, sigDown, StateDown},
		{sigStale, sigUnknown, StateUnknown},
		{sigStale, sigNone, StateDown},
		{sigUp, sigNone, StateUp},
		{sigDown, sigNone, StateDown},
	}
	e := &engine{cfg: &config{detect: detectBoth}}
	for _, tc := range tests {
		cs := &clusterState{sidecarSignal: sidecarSignal{sidecar: tc.sidecar}, probeSignal: probeSignal{probe: tc.probe}}
		if got, why := e.evaluate(cs); got != tc.want {
			t.Errorf("sidecar %s, probe %s: %s (%s), want %s", tc.sidecar, tc.probe, got, why, tc.want)
		}
	}
}

func adminBody(action, cluster string) []byte {
	return []byte(fmt.Sprintf(`{"action":%q,"cluster":%q,"reason":"maintenance"}`, action, cluster))
}

func TestDrainAPI(t *testing.T) {
	admin := writeKey(t, "admin-key-0123456789")
	h := newPushHS(t, "admin_key_file "+admin)
	adminKey := []byte("admin-key-0123456789")
	drainEast := adminBody("drain", "east")
	tests := []struct {
		name   string
		path   string
		body   []byte
		key    []byte
		status int
	}{
		{"unsigned", "/v1/clusters/east/drain", drainEast, nil, 401},
		{"signed with a cluster key", "/v1/clusters/east/drain", drainEast, pushKey, 401},
		{"unknown cluster", "/v1/clusters/nope/drain", adminBody("drain", "nope"), adminKey, 404},
		{"empty body", "/v1/clusters/east/drain", nil, adminKey, 400},
		{"body for another cluster", "/v1/clusters/west/drain", drainEast, adminKey, 400},
		{"drain body on undrain", "/v1/clusters/east/undrain", drainEast, adminKey, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if rec := post(t, h, tc.path, tc.body, tc.key, time.Now()); rec.Code != tc.status {
				t.Errorf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if s := state(h, "east"); s != StateUnknown {
				t.Errorf("east %s after a refused request", s)
			}
		})
	}

	req := httptest.NewRequest(http.MethodPost, "/v1/clusters/east/drain", bytes.NewReader(drainEast))
	report.SignRequest(req, adminKey, time.Now(), drainEast)
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("drain: %d %s", rec.Code, rec.Body)
	}
	if s := state(h, "east"); s != StateDrained {
		t.Errorf("east %s after drain", s)
	}
	// The same signed request again is a replay.
	again := httptest.NewRequest(http.MethodPost, "/v1/clusters/east/drain", bytes.NewReader(drainEast))
	again.Header = req.Header.Clone()
	rec = httptest.NewRecorder()
	h.api.ServeHTTP(rec, again)
	if rec.Code != 409 {
		t.Errorf("replayed drain: %d, want 409", rec.Code)
	}
	// A healthy report does not undo a drain.
	post(t, h, "/v1/report", body(t, "east", "b1", 1, true), pushKey, time.Now())
	if s := state(h, "east"); s != StateDrained {
		t.Errorf("east %s after a healthy report while drained", s)
	}
	// Signed later than the drain: operator requests are fenced by signed time.
	if rec := post(t, h, "/v1/clusters/east/undrain", adminBody("undrain", "east"), adminKey, time.Now().Add(2*time.Millisecond)); rec.Code != 200 {
		t.Fatalf("undrain: %d %s", rec.Code, rec.Body)
	}
	if s := state(h, "east"); s != StateUp {
		t.Errorf("east %s after undrain", s)
	}
}

func TestDrainWithoutAdminKey(t *testing.T) {
	h := newPushHS(t, "")
	if rec := post(t, h, "/v1/clusters/east/drain", adminBody("drain", "east"), pushKey, time.Now()); rec.Code != 403 {
		t.Errorf("drain without admin_key_file configured: %d", rec.Code)
	}
}

func TestHolddown(t *testing.T) {
	h := newPushHS(t, "holddown 300ms\nstale 1h") // no stale sidecar signal while held down
	now := time.Now()
	post(t, h, "/v1/report", body(t, "east", "b1", 1, false), pushKey, now)
	post(t, h, "/v1/report", body(t, "east", "b1", 2, true), pushKey, now)
	if s := state(h, "east"); s != StateDown {
		t.Fatalf("east %s right after recovering, want held down", s)
	}
	testutil.WaitFor(t, 3*time.Second, "east up after holddown", func() bool { return state(h, "east") == StateUp })
}

// During a key rollover the cluster lists the new key first and the old one
// after it: reports signed with either are accepted, others are not.
func TestKeyRollover(t *testing.T) {
	newKey := writeKey(t, "new-key-0123456789")
	oldKey := writeKey(t, "old-key-0123456789")
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file "+newKey+" "+oldKey+"\n}")
	if rec := post(t, h, "/v1/report", body(t, "east", "b", 1, true), []byte("old-key-0123456789"), time.Now()); rec.Code != 204 {
		t.Errorf("old key during rollover: %d %s", rec.Code, rec.Body)
	}
	if rec := post(t, h, "/v1/report", body(t, "east", "b", 2, true), []byte("new-key-0123456789"), time.Now()); rec.Code != 204 {
		t.Errorf("new key: %d %s", rec.Code, rec.Body)
	}
	if rec := post(t, h, "/v1/report", body(t, "east", "b", 3, true), pushKey, time.Now()); rec.Code != 401 {
		t.Errorf("a key not listed: %d", rec.Code)
	}
	if string(h.cfg.cluster("east").key) != "new-key-0123456789" {
		t.Error("notifications are not signed with the first (new) key")
	}
}

// A recovery is dated by the check run that saw it, not by when the report
// was sent; so is a failure.
func TestEventObservedTimes(t *testing.T) {
	h := newPushHS(t, "")
	sent := time.Now().UTC()
	failedAt, recoveredAt := sent.Add(-80*time.Millisecond), sent.Add(-30*time.Millisecond)
	send := func(seq uint64, healthy bool, checks ...report.Check) {
		r := report.Report{Version: 1, Cluster: "east", BootID: "b", Sequence: seq, SentAt: sent, Healthy: healthy, Checks: checks}
		b, _ := r.Encode()
		if rec := post(t, h, "/v1/report", b, pushKey, time.Now()); rec.Code != 204 {
			t.Fatal(rec.Code, rec.Body)
		}
	}
	send(1, false, report.Check{Name: "web", Critical: true, ObservedAt: failedAt},
		report.Check{Name: "db", Critical: true, Healthy: true, ObservedAt: sent.Add(-10 * time.Millisecond)})
	send(2, true, report.Check{Name: "web", Critical: true, Healthy: true, ObservedAt: recoveredAt},
		report.Check{Name: "db", Critical: true, Healthy: true, ObservedAt: sent.Add(-50 * time.Millisecond)})
	h.engine.mu.Lock()
	defer h.engine.mu.Unlock()
	ev := h.engine.events
	if len(ev) != 2 || !ev[0].ObservedAt.Equal(failedAt) || !ev[1].ObservedAt.Equal(recoveredAt) {
		t.Errorf("events %+v: want observed %s then %s", ev, failedAt, recoveredAt)
	}
}

func TestEventsSince(t *testing.T) {
	h := newPushHS(t, "")
	post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	post(t, h, "/v1/report", body(t, "east", "b", 2, true), pushKey, time.Now())
	get := func(q string) (int, []Event) {
		rec := httptest.NewRecorder()
		h.api.ServeHTTP(rec, localRequest("/v1/events"+q))
		var ev struct{ Events []Event }
		json.Unmarshal(rec.Body.Bytes(), &ev)
		return rec.Code, ev.Events
	}
	_, all := get("")
	if len(all) != 2 {
		t.Fatalf("events: %+v", all)
	}
	if _, ev := get(fmt.Sprintf("?since=%d", all[0].Epoch)); len(ev) != 1 || ev[0].Epoch != all[1].Epoch {
		t.Errorf("since the first: %+v", ev)
	}
	if _, ev := get(fmt.Sprintf("?since=%d", all[1].Epoch)); len(ev) != 0 {
		t.Errorf("since the last: %+v", ev)
	}
	if code, _ := get("?since=yesterday"); code != 400 {
		t.Errorf("bad since: %d", code)
	}
}
