package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// envoyAdminStandIn is a test double of Envoy's admin API: it counts
// POST /healthcheck/fail and /healthcheck/ok, and can be made to fail.
type envoyAdminStandIn struct {
	*httptest.Server
	mu      sync.Mutex
	calls   []string
	failing atomic.Bool
}

func newEnvoyAdminStandIn(t testing.TB) *envoyAdminStandIn {
	e := &envoyAdminStandIn{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if e.failing.Load() {
			http.Error(w, "admin is broken", http.StatusInternalServerError)
			return
		}
		e.mu.Lock()
		e.calls = append(e.calls, r.URL.Path)
		e.mu.Unlock()
		w.Write([]byte("OK\n"))
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *envoyAdminStandIn) seen() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.calls, " ")
}

// ingressFixture is a sidecar (not running its checks) with an http action
// against the Envoy stand-in and an exec action appending to a file.
type ingressFixture struct {
	s     *Sidecar
	envoy *envoyAdminStandIn
	file  string
}

func newIngressFixture(t *testing.T) *ingressFixture {
	f := &ingressFixture{envoy: newEnvoyAdminStandIn(t), file: filepath.Join(t.TempDir(), "lb.log")}
	cfg := loadConfig(t, fmt.Sprintf(`cluster: east
key_file: test.key
report_to: [http://127.0.0.1:1]
checks:
  - {name: web, tcp: {address: '127.0.0.1:1'}}
ingress:
  - http: {stop: '%[1]s/healthcheck/fail', resume: '%[1]s/healthcheck/ok'}
    attempts: 2
  - exec:
      stop: [/bin/sh, -c, 'echo "$HEALTHSWITCH_ACTION $HEALTHSWITCH_EPOCH $HEALTHSWITCH_CLUSTER" >> %[2]s']
      resume: [/bin/sh, -c, 'echo "$HEALTHSWITCH_ACTION $HEALTHSWITCH_EPOCH $HEALTHSWITCH_CLUSTER" >> %[2]s']
`, f.envoy.URL, f.file))
	f.s = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return f
}

func (f *ingressFixture) lines() string {
	b, _ := os.ReadFile(f.file)
	return strings.TrimSpace(string(b))
}

// notification is a notify body of a decision made at at.
func notification(cluster, action string, epoch uint64, at time.Time) []byte {
	b, _ := json.Marshal(report.Notification{Version: 1, Cluster: cluster, Action: action, Reason: "test", Epoch: epoch, At: at.UTC()})
	return b
}

// post sends body signed with key at ts (nil key: unsigned).
func (f *ingressFixture) post(body []byte, key string, ts time.Time) (int, string) {
	req := httptest.NewRequest(http.MethodPost, "/v1/distribution", bytes.NewReader(body))
	if key != "" {
		report.SignRequest(req, []byte(key), ts, body)
	}
	rec := httptest.NewRecorder()
	f.s.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestDistributionFence(t *testing.T) {
	f := newIngressFixture(t)
	t0 := time.Now()
	n := func(action string, epoch uint64, at time.Duration) []byte {
		return notification("east", action, epoch, t0.Add(at))
	}
	steps := []struct {
		name   string
		body   []byte    // decided at t0 + its at
		ts     time.Time // signed
		status int
		lines  string // the exec action's file afterwards
		envoy  string // the stand-in's calls afterwards
	}{
		{"stop", n("stop", 5, 0), t0, 200, "stop 5 east", "/healthcheck/fail"},
		{"older decision", n("resume", 9, -time.Millisecond), t0, 409, "stop 5 east", "/healthcheck/fail"},
		{"older decision sent late, signed anew", n("resume", 9, -time.Millisecond), t0.Add(2 * time.Second), 409, "stop 5 east", "/healthcheck/fail"},
		{"same instant, lower epoch", n("resume", 4, 0), t0, 409, "stop 5 east", "/healthcheck/fail"},
		{"same instant, higher epoch", n("resume", 6, 0), t0, 200, "stop 5 east\nresume 6 east", "/healthcheck/fail /healthcheck/ok"},
		{"restarted plugin: epoch from 0, decided later", n("stop", 1, time.Second), t0.Add(time.Second), 200,
			"stop 5 east\nresume 6 east\nstop 1 east", "/healthcheck/fail /healthcheck/ok /healthcheck/fail"},
		{"another replica, later: stop again is fine", n("stop", 77, 1001*time.Millisecond), t0.Add(1001 * time.Millisecond), 200,
			"stop 5 east\nresume 6 east\nstop 1 east\nstop 77 east", "/healthcheck/fail /healthcheck/ok /healthcheck/fail /healthcheck/fail"},
	}
	want := steps[len(steps)-1]
	for _, st := range steps {
		code, body := f.post(st.body, testKey, st.ts)
		if code != st.status {
			t.Errorf("%s: status %d, want %d: %s", st.name, code, st.status, body)
		}
		if got := f.lines(); got != st.lines {
			t.Errorf("%s: exec action wrote\n%s\nwant\n%s", st.name, got, st.lines)
		}
		if got := f.envoy.seen(); got != st.envoy {
			t.Errorf("%s: envoy stand-in saw %q, want %q", st.name, got, st.envoy)
		}
	}
	// The applied decision again, byte for byte or signed anew (a sender's
	// retry after its own timeout): nothing changes.
	for _, ts := range []time.Time{want.ts, want.ts.Add(time.Second)} {
		code, body := f.post(want.body, testKey, ts)
		if code != 409 || !strings.Contains(body, "already applied") {
			t.Errorf("replay: %d %s", code, body)
		}
	}
	if f.lines() != want.lines || f.envoy.seen() != want.envoy {
		t.Errorf("replay changed something: %q / %q", f.lines(), f.envoy.seen())
	}
	st := f.s.Status().Ingress
	if st == nil || st.State != ingressStopped || st.Last == nil || st.Last.Epoch != 77 || !st.Last.OK || len(st.Actions) != 2 ||
		st.Notifications["applied"] != 4 || st.Notifications["stale"] != 3 || st.Notifications["replay"] != 2 {
		t.Errorf("status: %+v", st)
	}
	for series, v := range map[string]float64{
		`healthswitch_sidecar_ingress_notifications_total{result="applied"}`:                  4,
		`healthswitch_sidecar_ingress_notifications_total{result="stale"}`:                    3,
		`healthswitch_sidecar_ingress_notifications_total{result="replay"}`:                   2,
		`healthswitch_sidecar_ingress_actions_total{action="stop",kind="http",result="ok"}`:   3,
		`healthswitch_sidecar_ingress_actions_total{action="resume",kind="exec",result="ok"}`: 1,
		`healthswitch_sidecar_ingress_state{state="stopped"}`:                                 1,
		`healthswitch_sidecar_ingress_state{state="serving"}`:                                 0,
		`healthswitch_sidecar_ingress_apply_duration_seconds_count{action="stop"}`:            3,
	} {
		if got := metricValue(t, f.s, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
}

func TestDistributionRefuses(t *testing.T) {
	f := newIngressFixture(t)
	now := time.Now()
	good := string(notification("east", "stop", 3, now))
	tests := []struct {
		name   string
		body   string
		key    string
		ts     time.Time
		status int
		result string
	}{
		{"forged", good, "not-the-east-key-at-all", now, 401, "signature"},
		{"unsigned", good, "", now, 401, "signature"},
		{"too old", good, testKey, now.Add(-time.Minute), 409, "skew"},
		{"signed before the sidecar started", string(notification("east", "stop", 3, now.Add(-time.Second))), testKey, now.Add(-time.Second), 409, "stale"},
		{"unknown field", strings.Replace(good, `"epoch"`, `"force":true,"epoch"`, 1), testKey, now, 400, "malformed"},
		{"duplicate field", strings.Replace(good, `"action":"stop"`, `"action":"resume","action":"stop"`, 1), testKey, now, 400, "malformed"},
		{"field in other case", strings.Replace(good, `"action"`, `"Action"`, 1), testKey, now, 400, "malformed"},
		{"wrong version", strings.Replace(good, `"version":1`, `"version":2`, 1), testKey, now, 400, "malformed"},
		{"unknown action", strings.Replace(good, `"stop"`, `"halt"`, 1), testKey, now, 400, "malformed"},
		{"no time", strings.Replace(good, `"at"`, `"reason2"`, 1), testKey, now, 400, "malformed"},
		{"not an object", `[1]`, testKey, now, 400, "malformed"},
		{"trailing data", good + `{}`, testKey, now, 400, "malformed"},
		{"wrong cluster", strings.Replace(good, `"east"`, `"west"`, 1), testKey, now, 400, "wrong_cluster"},
		{"decided after it was signed", string(notification("east", "stop", 3, now.Add(2*time.Second))), testKey, now, 400, "malformed"},
		{"too large", good + strings.Repeat(" ", report.MaxBodySize), testKey, now, 413, "too_large"},
	}
	f.s.dist.started = now.Add(-500 * time.Millisecond).UnixMilli()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := metricValue(t, f.s, `healthswitch_sidecar_ingress_notifications_total{result="`+tc.result+`"}`)
			code, body := f.post([]byte(tc.body), tc.key, tc.ts)
			if code != tc.status {
				t.Errorf("status %d, want %d: %s", code, tc.status, body)
			}
			if got := metricValue(t, f.s, `healthswitch_sidecar_ingress_notifications_total{result="`+tc.result+`"}`); got != before+1 {
				t.Errorf("notifications_total{result=%q} went %v -> %v", tc.result, before, got)
			}
			if f.lines() != "" || f.envoy.seen() != "" {
				t.Errorf("an action ran: %q / %q", f.lines(), f.envoy.seen())
			}
		})
	}
	if st := f.s.Status().Ingress; st.State != ingressUnknown || st.Last != nil {
		t.Errorf("status after refusals: %+v", st)
	}
}

// An action that fails makes the answer 502 and leaves the state as it
// was; the plugin's resend of the same decision then applies it.
func TestDistributionActionFailure(t *testing.T) {
	f := newIngressFixture(t)
	f.envoy.failing.Store(true)
	ts := time.Now()
	body := notification("east", "stop", 8, ts)
	code, resp := f.post(body, testKey, ts)
	if code != http.StatusBadGateway || !strings.Contains(resp, "status 500: admin is broken") {
		t.Fatalf("failing action: %d %s", code, resp)
	}
	// The exec action ran anyway: draining what can be drained.
	if f.lines() != "stop 8 east" {
		t.Errorf("exec action: %q", f.lines())
	}
	st := f.s.Status().Ingress
	if st.State != ingressUnknown || st.Last.OK || st.Actions[0].Attempts != 2 || st.Actions[0].OK || !st.Actions[1].OK {
		t.Errorf("status after the failure: %+v", st)
	}
	if v := metricValue(t, f.s, `healthswitch_sidecar_ingress_actions_total{action="stop",kind="http",result="error"}`); v != 1 {
		t.Errorf("actions_total error = %v", v)
	}
	f.envoy.failing.Store(false)
	if code, resp := f.post(body, testKey, ts); code != 200 {
		t.Fatalf("resent after the fix: %d %s", code, resp)
	}
	if f.envoy.seen() != "/healthcheck/fail" || f.lines() != "stop 8 east\nstop 8 east" {
		t.Errorf("after the resend: %q / %q", f.envoy.seen(), f.lines())
	}
	if st := f.s.Status().Ingress; st.State != ingressStopped || !st.Last.OK {
		t.Errorf("status after the resend: %+v", st)
	}
}

func TestDistributionWithoutIngress(t *testing.T) {
	cfg := loadConfig(t, "cluster: east\nkey_file: test.key\nreport_to: [http://127.0.0.1:1]\nchecks:\n  - {name: web, tcp: {address: '127.0.0.1:1'}}\n")
	f := &ingressFixture{s: New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	if code, body := f.post(notification("east", "stop", 1, time.Now()), testKey, time.Now()); code != 404 {
		t.Errorf("no ingress configured: %d %s", code, body)
	}
	if f.s.Status().Ingress != nil {
		t.Error("status shows an ingress section without ingress")
	}
}

func TestIngressConfigInvalid(t *testing.T) {
	head := "cluster: east\nkey_file: test.key\nreport_to: [http://127.0.0.1:1]\nchecks:\n  - {name: web, tcp: {address: '127.0.0.1:1'}}\ningress:\n"
	tests := []struct{ name, yaml, want string }{
		{"no kind", "  - {timeout: 1s}", "ingress[0]: no ingress kind: set one of haproxy, http, exec"},
		{"two kinds", "  - {exec: {stop: [a], resume: [b]}, http: {stop: 'http://x/a', resume: 'http://x/b'}}", "ingress[0]: more than one ingress kind: http, exec"},
		{"empty entry", "  -", "ingress[0]: empty entry"},
		{"unknown key", "  - {haproxy: {socket: /s, backends: [web], backend: web}}", "field backend not found in type sidecar.HAProxyIngress"},
		{"no socket", "  - {haproxy: {backends: [web]}}", "ingress[0]: haproxy: socket: required"},
		{"relative socket", "  - {haproxy: {socket: run/admin.sock, backends: [web]}}", `ingress[0]: haproxy: socket "run/admin.sock": neither an absolute path nor host:port`},
		{"no backends", "  - {haproxy: {socket: /s}}", "ingress[0]: haproxy: backends: at least one backend is required"},
		{"bad backend", "  - {haproxy: {socket: /s, backends: ['web; shutdown']}}", `ingress[0]: haproxy: backends[0] "web; shutdown": not a backend name`},
		{"bad url", "  - {http: {stop: 'http://x/a', resume: '127.0.0.1:9901/ok'}}", `ingress[0]: http: resume "127.0.0.1:9901/ok": not an http:// or https:// URL`},
		{"no resume command", "  - {exec: {stop: [/bin/true]}}", "ingress[0]: exec: resume: required"},
		{"bad timeout", "  - {exec: {stop: [a], resume: [b]}, timeout: 5}", `ingress[0]: timeout: "5" is not a duration`},
		{"negative attempts", "  - {exec: {stop: [a], resume: [b]}, attempts: -1}", "ingress[0]: attempts -1: must not be negative"},
		{"unknown ingress key", "  - {exec: {stop: [a], resume: [b]}, retries: 2}", "field retries not found in type sidecar.IngressAction"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, t.TempDir(), head+tc.yaml+"\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	cfg := loadConfig(t, head+"  - {exec: {stop: [a], resume: [b]}}\n")
	if a := cfg.Ingress[0]; a.timeout != DefaultIngressTimeout || a.Attempts != DefaultIngressAttempts {
		t.Errorf("defaults: timeout %s attempts %d", a.timeout, a.Attempts)
	}
}

func TestParseServersState(t *testing.T) {
	// As HAProxy 2.6 prints it (columns cut after srv_admin_state's neighbours).
	out := "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n" +
		"3 web 1 s1 127.0.0.1 2 0 1\n3 web 2 s2 127.0.0.1 2 8 1\n3 web 3 s3 127.0.0.1 0 1 1\n\n"
	got, err := parseServersState("web", out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].drained() || !got[1].drained() || got[1].maint() || !got[2].maint() || got[2].name != "s3" {
		t.Errorf("parsed %+v", got)
	}
	if _, err := parseServersState("nope", "Can't find backend.\n\n"); err == nil || !strings.Contains(err.Error(), `haproxy says "Can't find backend."`) {
		t.Errorf("unknown backend: %v", err)
	}
}

// During a key rollover the sidecar lists both keys: notifications signed
// with either are obeyed (the DNS servers sign with the first of theirs),
// and its reports are signed with the first.
func TestDistributionKeyRollover(t *testing.T) {
	dir := t.TempDir()
	const newKey = "new-key-0123456789abcdef"
	os.WriteFile(filepath.Join(dir, "new.key"), []byte(newKey), 0o600)
	cfg, err := Load(writeConfig(t, dir, "cluster: east\nkey_file: [new.key, test.key]\nreport_to: [http://127.0.0.1:1]\n"+
		"checks:\n  - {name: web, tcp: {address: '127.0.0.1:1'}}\ningress:\n  - exec: {stop: [/bin/true], resume: [/bin/true]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.Key) != newKey || len(cfg.Keys) != 2 {
		t.Fatalf("keys: first %q, %d in all", cfg.Key, len(cfg.Keys))
	}
	f := &ingressFixture{s: New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	now := time.Now()
	for i, key := range []string{testKey, newKey} {
		if code, body := f.post(notification("east", "stop", uint64(i+1), now), key, now); code != 200 {
			t.Errorf("signed with key %d: %d %s", i, code, body)
		}
	}
	if _, err := Load(writeConfig(t, t.TempDir(), "cluster: east\nkey_file: []\nreport_to: [http://127.0.0.1:1]\nchecks:\n  - {name: web, tcp: {address: '127.0.0.1:1'}}\n")); err == nil || err.Error() != "key_file: required" {
		t.Errorf("empty key_file list: %v", err)
	}
}

// An exec action past its timeout is killed and counts as failed, named by
// its own command.
func TestExecIngressTimeout(t *testing.T) {
	a := &IngressAction{Exec: &ExecIngress{Stop: []string{"/bin/sleep", "5"}, Resume: []string{"/bin/true"}}, Timeout: Duration{Duration: 50 * time.Millisecond}, Attempts: 1}
	if err := a.compile(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := a.run(t.Context(), applyRequest{cluster: "east", action: actionStop})
	if res.OK || res.Error != "/bin/sleep: context deadline exceeded" || time.Since(start) > 2*time.Second {
		t.Errorf("result %+v after %s", res, time.Since(start))
	}
	res = a.run(t.Context(), applyRequest{cluster: "east", action: actionResume})
	if !res.OK || res.Detail != "/bin/true exited 0" {
		t.Errorf("resume: %+v", res)
	}
}
