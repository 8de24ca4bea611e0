package sidecar

import (
	"context"
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

	"github.com/healthswitch/healthswitch/internal/testutil"

	"github.com/healthswitch/healthswitch/report"
)

const testKey = "sidecar-test-key-0123456789abcdef"

// receiver is a push target that verifies and records every report.
type receiver struct {
	*httptest.Server
	status  atomic.Int32 // answer to give; 0 means 204
	delay   atomic.Int64 // nanoseconds to stall before answering
	mu      sync.Mutex
	reports []report.Report
	got     chan report.Report
	bad     atomic.Int32 // reports that failed verification
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{got: make(chan report.Report, 1024)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The body is read first: only then does the server notice a client
		// that gave up, and end the stall below.
		body, _ := io.ReadAll(io.LimitReader(r.Body, report.MaxBodySize+1))
		if d := time.Duration(rc.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if r.URL.Path != "/v1/report" || r.Method != http.MethodPost {
			rc.bad.Add(1)
			http.NotFound(w, r)
			return
		}
		err := report.Verify([]byte(testKey), r.Header.Get(report.HeaderTimestamp), r.Header.Get(report.HeaderSignature), body, time.Now(), report.DefaultSkew)
		rep, derr := report.Decode(body)
		if err != nil || derr != nil {
			rc.bad.Add(1)
			http.Error(w, "bad", http.StatusUnauthorized)
			return
		}
		if s := rc.status.Load(); s != 0 {
			http.Error(w, "refused", int(s))
			return
		}
		rc.mu.Lock()
		rc.reports = append(rc.reports, rep)
		rc.mu.Unlock()
		select {
		case rc.got <- rep:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// waitFor returns the first report received that satisfies cond.
func (rc *receiver) waitFor(t testing.TB, within time.Duration, what string, cond func(report.Report) bool) report.Report {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case r := <-rc.got:
			if cond(r) {
				return r
			}
		case <-deadline:
			t.Fatalf("no report within %s: %s", within, what)
		}
	}
}

func (rc *receiver) all() []report.Report {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]report.Report(nil), rc.reports...)
}

func writeConfig(t testing.TB, dir, body string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "test.key"), []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadConfig(t testing.TB, body string) *Config {
	t.Helper()
	cfg, err := Load(writeConfig(t, t.TempDir(), body))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// flappy is an HTTP server whose health the test switches.
type flappy struct {
	*httptest.Server
	code atomic.Int32
}

func newFlappy(t testing.TB) *flappy {
	f := &flappy{}
	f.code.Store(200)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(f.code.Load()))
	}))
	t.Cleanup(f.Close)
	return f
}

func startSidecar(t testing.TB, cfg *Config) (*Sidecar, func()) {
	t.Helper()
	s := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testutil.WaitFor(t, 2*time.Second, "status server bound", func() bool { return s.Addr() != nil })
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(2*stopBound + time.Second):
			t.Error("sidecar did not stop in time")
		}
	}
	t.Cleanup(stop)
	return s, stop
}

func TestPushOnChangeAndHeartbeat(t *testing.T) {
	a, b := newReceiver(t), newReceiver(t)
	web := newFlappy(t)
	cfg := loadConfig(t, `cluster: east
key_file: test.key
report_to: [`+a.URL+`, `+b.URL+`/]
interval: 20ms
heartbeat: 100ms
listen: 127.0.0.1:0
checks:
  - name: web
    http: {url: `+web.URL+`}
    rise: 2
  - name: optional
    tcp: {address: 127.0.0.1:1}
    critical: false
`)
	s, _ := startSidecar(t, cfg)

	for _, rc := range []*receiver{a, b} {
		r := rc.waitFor(t, 2*time.Second, "a healthy report with every check run", func(r report.Report) bool {
			return r.Healthy && !r.Checks[0].ObservedAt.IsZero() && !r.Checks[1].ObservedAt.IsZero()
		})
		if r.Cluster != "east" || r.BootID != s.BootID() || r.IntervalMS != 20 || len(r.Checks) != 2 {
			t.Errorf("report %+v", r)
		}
		if opt := r.Checks[1]; opt.Name != "optional" || opt.Critical || opt.Healthy {
			t.Errorf("non-critical failing check reported as %+v", opt)
		}
	}

	web.code.Store(500)
	start := time.Now()
	r := a.waitFor(t, time.Second, "an unhealthy report", func(r report.Report) bool { return !r.Healthy })
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("fault pushed after %s, want within ~one interval (20ms) and well before a heartbeat", took)
	}
	if c := r.Checks[0]; c.Healthy || !strings.Contains(c.Detail, "status 500") {
		t.Errorf("web check %+v", c)
	}
	b.waitFor(t, time.Second, "unhealthy at the second target too", func(r report.Report) bool { return !r.Healthy })

	web.code.Store(200)
	a.waitFor(t, time.Second, "healthy again after rise 2", func(r report.Report) bool { return r.Healthy })

	// Heartbeats: reports keep coming with nothing changing.
	n := len(a.all())
	testutil.WaitFor(t, time.Second, "two heartbeats", func() bool { return len(a.all()) >= n+2 })

	for _, rc := range []*receiver{a, b} {
		if rc.bad.Load() != 0 {
			t.Errorf("%d reports failed signature or decoding", rc.bad.Load())
		}
		var last uint64
		for _, r := range rc.all() {
			if r.Sequence <= last || r.BootID != s.BootID() {
				t.Errorf("sequence %d after %d (boot %s)", r.Sequence, last, r.BootID)
			}
			last = r.Sequence
		}
	}
}

// A receiver that fails or hangs must not delay reports to the others, and
// when it comes back it gets the newest state, not a backlog.
func TestSlowTargetDoesNotDelayOthers(t *testing.T) {
	good, dead, failing := newReceiver(t), newReceiver(t), newReceiver(t)
	dead.delay.Store(int64(10 * time.Second)) // hangs past the push timeout
	failing.status.Store(503)
	web := newFlappy(t)
	cfg := loadConfig(t, `cluster: east
key_file: test.key
report_to: [`+dead.URL+`, `+failing.URL+`, `+good.URL+`]
interval: 20ms
heartbeat: 50ms
listen: 127.0.0.1:0
checks: [{name: web, http: {url: `+web.URL+`}}]
`)
	s, _ := startSidecar(t, cfg)
	good.waitFor(t, time.Second, "first report", func(report.Report) bool { return true })
	web.code.Store(500)
	start := time.Now()
	good.waitFor(t, time.Second, "unhealthy report", func(r report.Report) bool { return !r.Healthy })
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("unhealthy report reached the good target after %s", took)
	}

	// The failing target retried and saw newer reports superseding old ones.
	testutil.WaitFor(t, 2*time.Second, "retries counted", func() bool {
		return metricValue(t, s, `healthswitch_sidecar_pushes_total{result="server_error",target="`+failing.URL+`/v1/report"}`) >= 3
	})
	testutil.WaitFor(t, 2*time.Second, "superseded reports counted for the hung target", func() bool {
		return metricValue(t, s, `healthswitch_sidecar_pushes_superseded_total{target="`+dead.URL+`/v1/report"}`) >= 1
	})

	failing.status.Store(0)
	r := failing.waitFor(t, 2*time.Second, "a report once it recovers", func(report.Report) bool { return true })
	if r.Healthy {
		t.Error("recovered target got a stale healthy report")
	}
	if latest := s.seq.Load(); r.Sequence+3 < latest {
		t.Errorf("recovered target got sequence %d while the latest is %d: a backlog, not the newest", r.Sequence, latest)
	}
}

func TestConflictIsNotRetried(t *testing.T) {
	rc := newReceiver(t)
	rc.status.Store(http.StatusConflict)
	cfg := loadConfig(t, `cluster: east
key_file: test.key
report_to: [`+rc.URL+`]
heartbeat: 1s
listen: 127.0.0.1:0
checks: [{name: self, exec: {command: ["true"]}}]
`)
	s, _ := startSidecar(t, cfg)
	s.current().pushOnce("test")
	target := `healthswitch_sidecar_pushes_total{result="conflict",target="` + rc.URL + `/v1/report"}`
	sent := func() float64 {
		return metricValue(t, s, `healthswitch_sidecar_reports_total{reason="test"}`) +
			metricValue(t, s, `healthswitch_sidecar_reports_total{reason="change"}`) +
			metricValue(t, s, `healthswitch_sidecar_reports_total{reason="heartbeat"}`)
	}
	testutil.WaitFor(t, time.Second, "a conflict", func() bool { return metricValue(t, s, target) >= 1 })
	time.Sleep(200 * time.Millisecond) // long enough for several retries, were there any
	if v, n := metricValue(t, s, target), sent(); v != n {
		t.Errorf("%v attempts for %v reports refused with 409, want one each", v, n)
	}
}

func TestStatusMetricsHealthz(t *testing.T) {
	rc := newReceiver(t)
	web := newFlappy(t)
	web.code.Store(500)
	cfg := loadConfig(t, `cluster: east
key_file: test.key
report_to: [`+rc.URL+`]
interval: 20ms
listen: 127.0.0.1:0
checks:
  - {name: web, http: {url: `+web.URL+`}}
  - {name: ok, exec: {command: ["true"]}, interval: 50ms}
`)
	s, _ := startSidecar(t, cfg)
	base := "http://" + s.Addr().String()
	rc.waitFor(t, 2*time.Second, "unhealthy", func(r report.Report) bool { return !r.Healthy })
	testutil.WaitFor(t, 2*time.Second, "every check run", func() bool { return s.Status().Checks[1].Runs > 0 })

	if body := get(t, base+"/healthz"); body != "ok\n" {
		t.Errorf("/healthz = %q", body)
	}
	var st Status
	if err := json.Unmarshal([]byte(get(t, base+"/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Healthy || st.Cluster != "east" || len(st.Checks) != 2 || st.Checks[0].State != "down" || st.Checks[1].State != "up" ||
		st.Checks[0].IntervalMS != 20 || st.Checks[1].IntervalMS != 50 || st.Checks[0].Runs == 0 || len(st.Targets) != 1 {
		t.Errorf("status %+v", st)
	}
	metrics := get(t, base+"/metrics")
	for _, want := range []string{
		`healthswitch_sidecar_check_up{check="web"} 0`,
		`healthswitch_sidecar_check_up{check="ok"} 1`,
		`healthswitch_sidecar_check_runs_total{check="web",result="fail"}`,
		`healthswitch_sidecar_check_duration_seconds_bucket{check="ok"`,
		`healthswitch_sidecar_pushes_total{result="ok",target="` + rc.URL + `/v1/report"}`,
		`healthswitch_sidecar_reports_total{reason="change"}`,
		`healthswitch_sidecar_healthy 0`,
		`healthswitch_sidecar_build_info{version="dev"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestReload(t *testing.T) {
	rc := newReceiver(t)
	web := newFlappy(t)
	web.code.Store(500)
	base := `cluster: east
key_file: test.key
report_to: [` + rc.URL + `]
interval: 20ms
heartbeat: 1s
listen: 127.0.0.1:0
checks:
  - {name: web, http: {url: ` + web.URL + `}, rise: 3}
`
	s, _ := startSidecar(t, loadConfig(t, base))
	rc.waitFor(t, 2*time.Second, "unhealthy", func(r report.Report) bool { return !r.Healthy })

	cfg := loadConfig(t, base+"  - {name: extra, exec: {command: [\"true\"]}}\n")
	before := s.seq.Load()
	if err := s.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	// Pushed at once; the web check stays down across the reload (it carries
	// its state) instead of counting as up while its new counter warms up.
	r := rc.waitFor(t, 500*time.Millisecond, "a report of the new config", func(r report.Report) bool { return r.Sequence > before })
	if r.Healthy || len(r.Checks) != 2 || r.Checks[0].Healthy {
		t.Errorf("after reload %+v", r)
	}

	// A listen address that cannot be bound fails the reload; the old config runs on.
	busy := loadConfig(t, strings.Replace(base, "127.0.0.1:0", s.Addr().String(), 1))
	busy.Listen = "256.0.0.1:1"
	if err := s.Reload(busy); err == nil {
		t.Fatal("reload to an unbindable address succeeded")
	}
	if n := len(s.Status().Checks); n != 2 {
		t.Errorf("%d checks after a failed reload, want the old 2", n)
	}
	if get(t, "http://"+s.Addr().String()+"/healthz") != "ok\n" {
		t.Error("status server gone after a failed reload")
	}
}

func TestStopIsBounded(t *testing.T) {
	rc := newReceiver(t)
	cfg := loadConfig(t, `cluster: east
key_file: test.key
report_to: [`+rc.URL+`]
interval: 1s
listen: 127.0.0.1:0
checks: [{name: hang, exec: {command: [sleep, "30"]}, timeout: 900ms}]
`)
	_, stop := startSidecar(t, cfg)
	time.Sleep(1100 * time.Millisecond) // let the hanging check start
	start := time.Now()
	stop()
	if took := time.Since(start); took > stopBound {
		t.Errorf("stop took %s", took)
	}
}

func TestPanickingCheckIsContained(t *testing.T) {
	probers["test-panic"] = func(context.Context, *Check) Result { panic("boom") }
	defer delete(probers, "test-panic")
	c := &Check{Name: "p", kind: "test-panic", interval: time.Second, timeout: 100 * time.Millisecond}
	r := c.Run(context.Background())
	if r.Healthy || !strings.Contains(r.Why(), "check panicked: boom") {
		t.Errorf("result %+v", r)
	}
}

func get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue reads one sample from the sidecar's registry; 0 when absent.
func metricValue(t testing.TB, s *Sidecar, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			json.Unmarshal([]byte(v), &f)
			return f
		}
	}
	return 0
}

func TestEncodeBounded(t *testing.T) {
	r := report.Report{Version: 1, Cluster: "east", BootID: "b", Sequence: 1}
	for i := range 400 {
		r.Checks = append(r.Checks, report.Check{Name: fmt.Sprintf("c%d", i), Kind: "http", Detail: strings.Repeat("x", maxDetail)})
	}
	body, err := encodeBounded(r)
	if err != nil || len(body) > report.MaxBodySize {
		t.Fatalf("%d bytes, %v", len(body), err)
	}
	back, err := report.Decode(body)
	if err != nil || len(back.Checks) != 400 || back.Checks[0].Detail != "" {
		t.Errorf("decoded %d checks, detail %q, %v", len(back.Checks), back.Checks[0].Detail, err)
	}
	if r.Checks[0].Detail == "" {
		t.Error("the caller's report was changed")
	}
}
