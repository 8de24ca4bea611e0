package healthswitch

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// An app block overrides the block-wide level field by field; what it leaves
// unset comes from the block-wide value, wherever that line stands.
func TestParseAppLevel(t *testing.T) {
	cfg, err := parseString(t, `healthswitch {
 cluster east 192.0.2.10
 cluster west 198.51.100.10
 app pay.svc1.net east west {
  policy failover
  ttl 1
 }
 app www.svc1.net east west
 app empty.svc1.net west {
 }
 all_down nodata
 slow_start 2s
 ttl 9
}`)
	if err != nil {
		t.Fatal(err)
	}
	pay, www, empty := cfg.apps[0], cfg.apps[1], cfg.apps[2]
	if want := (level{policy: policyFailover, allDown: allDownNodata, ttl: 1, slowStart: 2 * time.Second}); *pay.level != want {
		t.Errorf("pay level %+v, want %+v", *pay.level, want)
	}
	if www.level != &cfg.level || empty.level != &cfg.level {
		t.Errorf("apps without a level of their own do not share the block-wide one: %p %p %p", www.level, empty.level, &cfg.level)
	}
	if want := (level{policy: policyAll, allDown: allDownNodata, ttl: 9, slowStart: 2 * time.Second}); cfg.level != want {
		t.Errorf("block-wide level %+v, want %+v", cfg.level, want)
	}
	if len(pay.clusters) != 2 || pay.line != 4 {
		t.Errorf("pay: %+v", pay)
	}

	// The default apps (no app line) take the block-wide level.
	cfg, err = parseString(t, "healthswitch {\n cluster a 192.0.2.1\n ttl 3\n}")
	if err != nil {
		t.Fatal(err)
	}
	for _, ap := range cfg.apps {
		if ap.level != &cfg.level || ap.level.ttl != 3 {
			t.Errorf("default app %s: level %+v", ap.name, ap.level)
		}
	}
}

func TestParseAppLevelErrors(t *testing.T) {
	tests := []struct{ name, input, want string }{
		{"unknown property", "app svc1.net a {\n  colour red\n }", `Testfile:4 - Error during parsing: app svc1.net.: unknown property "colour"`},
		{"cluster property", "app svc1.net a {\n  weight 5\n }", `Testfile:4 - Error during parsing: app svc1.net.: unknown property "weight"`},
		{"bad policy", "app svc1.net a {\n  policy random\n }", `Testfile:4 - Error during parsing: policy: "random" is not one of all, failover, weighted`},
		{"bad all_down", "app svc1.net a {\n  all_down panic\n }", `Testfile:4 - Error during parsing: all_down: "panic" is not one of serve_all, servfail, nodata`},
		{"ttl out of range", "app svc1.net a {\n  ttl 90000\n }", "Testfile:4 - Error during parsing: ttl: 90000 is out of range [0, 86400]"},
		{"ttl arity", "app svc1.net a {\n  ttl 1 2\n }", "Testfile:4 - Error during parsing: Wrong argument count"},
		{"negative slow_start", "app svc1.net a {\n  slow_start -1s\n }", "Testfile:4 - Error during parsing: slow_start: -1s must be greater than 0"},
		{"set twice", "app svc1.net a {\n  ttl 1\n  ttl 2\n }", "Testfile:5 - Error during parsing: app svc1.net.: ttl is set twice"},
		{"weighted, no weight", "cluster z 192.0.2.2 {\n  weight 0\n }\n app svc1.net z {\n  policy weighted\n }", "Testfile:6 - Error during parsing: app svc1.net.: policy weighted needs at least one of its clusters with a weight above 0"},
		{"unclosed", "app svc1.net a {\n  ttl 1", "Unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			input := "healthswitch {\n cluster a 192.0.2.1\n " + tc.input
			if tc.name != "unclosed" {
				input += "\n}"
			}
			_, err := parseString(t, input)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\n does not contain %q", err, tc.want)
			}
		})
	}
}

const levelClusters = `cluster east 192.0.2.10 2001:db8::10 {
  key_file KEY
  priority 1
}
cluster west 198.51.100.10 {
  key_file KEY
  priority 2
}
ttl 7
`

// Two names on the same clusters, each answered per its own level through
// failures and recovery: a payment API that fails over to its standby tier
// and fails closed, next to a site on every cluster that fails open.
func TestAppLevelsAnswer(t *testing.T) {
	h := newTestHS(t, levelClusters+`app pay.svc1.net east west {
  policy failover
  all_down servfail
  ttl 1
}
app www.svc1.net east west`)
	type want struct {
		rcode int
		addrs string
		ttl   uint32
	}
	check := func(step, name string, w want) {
		t.Helper()
		m, rcode := query(t, h, name, dns.TypeA, false)
		if rcode != w.rcode {
			t.Fatalf("%s: %s rcode %s, want %s", step, name, dns.RcodeToString[rcode], dns.RcodeToString[w.rcode])
		}
		if m == nil {
			return // SERVFAIL: CoreDNS writes it
		}
		if got := fmt.Sprint(addrs(m)); got != w.addrs {
			t.Errorf("%s: %s answered %s, want %s", step, name, got, w.addrs)
		}
		for _, rr := range m.Answer {
			if rr.Header().Ttl != w.ttl {
				t.Errorf("%s: %s TTL %d, want %d", step, name, rr.Header().Ttl, w.ttl)
			}
		}
	}
	both := "[192.0.2.10 198.51.100.10]"
	servfail := want{rcode: dns.RcodeServerFailure}

	check("both up", "pay.svc1.net.", want{0, "[192.0.2.10]", 1})
	check("both up", "www.svc1.net.", want{0, both, 7})

	set(h, "east", sigDown)
	check("east down", "pay.svc1.net.", want{0, "[198.51.100.10]", 1})
	check("east down", "www.svc1.net.", want{0, "[198.51.100.10]", 7})
	// The standby tier has no IPv6 address: NODATA, not east's.
	if m, _ := query(t, h, "pay.svc1.net.", dns.TypeAAAA, false); m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
		t.Errorf("east down: pay AAAA %v", m)
	}

	servfails := counterValue(allDownCount.WithLabelValues(allDownServfail))
	servedAll := counterValue(allDownCount.WithLabelValues(allDownServeAll))
	set(h, "west", sigDown)
	check("all down", "pay.svc1.net.", servfail)
	check("all down", "www.svc1.net.", want{0, both, 7})
	if d := counterValue(allDownCount.WithLabelValues(allDownServfail)) - servfails; d != 1 {
		t.Errorf("all_down_answers_total{mode=servfail} grew by %v, want 1", d)
	}
	if d := counterValue(allDownCount.WithLabelValues(allDownServeAll)) - servedAll; d != 1 {
		t.Errorf("all_down_answers_total{mode=serve_all} grew by %v, want 1", d)
	}

	set(h, "west", sigUp)
	check("west back", "pay.svc1.net.", want{0, "[198.51.100.10]", 1})
	check("west back", "www.svc1.net.", want{0, "[198.51.100.10]", 7})

	set(h, "east", sigUp)
	check("east back", "pay.svc1.net.", want{0, "[192.0.2.10]", 1})
	check("east back", "www.svc1.net.", want{0, both, 7})
}

// Answer sets are shared by the names with the same clusters and level, and
// by them only.
func TestAnswerSetsSharedPerLevel(t *testing.T) {
	h := newTestHS(t, levelClusters+`app a.svc1.net east west
app b.svc1.net east west {
  ttl 7
}
app c.svc1.net east west {
  ttl 1
}
app d.svc1.net east west {
  policy failover
}
app e.svc1.net west east`)
	snap := h.snap.Load()
	idx := func(n string) int { return snap.names[n+".svc1.net."].set }
	if idx("a") != idx("b") {
		t.Error("a and b have the same clusters and level but not the same answer set")
	}
	if idx("a") == idx("c") || idx("a") == idx("d") || idx("c") == idx("d") || idx("a") == idx("e") {
		t.Errorf("names with different levels share an answer set: %d %d %d %d %d", idx("a"), idx("b"), idx("c"), idx("d"), idx("e"))
	}
	if len(snap.groups) != 4 || len(snap.sets) != 4 {
		t.Errorf("%d groups, %d sets, want 4", len(snap.groups), len(snap.sets))
	}
}

// Slow start is timed per cluster and weighed per name: a name with
// slow_start ramps a recovered cluster in, next to one without, which takes
// it back whole at once.
func TestSlowStartPerName(t *testing.T) {
	h := newTestHS(t, levelClusters+`app ramp.svc1.net east west {
  slow_start 10s
}
app www.svc1.net east west`)
	if h.cfg.minSlowStart != 10*time.Second || h.cfg.maxSlowStart != 10*time.Second {
		t.Fatalf("slow_start range %s..%s", h.cfg.minSlowStart, h.cfg.maxSlowStart)
	}
	e := h.engine
	clock := time.Now()
	e.now = func() time.Time { return clock }
	set(h, "east", sigUp)
	set(h, "west", sigUp)
	set(h, "east", sigDown)
	clock = clock.Add(time.Second)
	set(h, "east", sigUp)

	weights := func(step string) (ramp, www map[string]float64) {
		t.Helper()
		var doc statusDoc
		getStatus(t, h, &doc)
		for _, n := range doc.Names {
			switch n.Name {
			case "ramp.svc1.net.":
				ramp = n.Weights
			case "www.svc1.net.":
				www = n.Weights
			}
		}
		return ramp, www
	}
	near := func(got, want float64) bool { return got > want-0.01 && got < want+0.01 }

	ramp, www := weights("just back")
	if !near(ramp["east"], minShare) || ramp["west"] != 1 {
		t.Errorf("just back: ramp weights %v, want east %.1f, west 1", ramp, minShare)
	}
	if www != nil {
		t.Errorf("just back: www weighs %v; without slow_start it answers every cluster whole", www)
	}
	if m, _ := query(t, h, "www.svc1.net.", dns.TypeA, false); len(m.Answer) != 2 {
		t.Errorf("just back: www answered %v", addrs(m))
	}

	clock = clock.Add(5 * time.Second)
	e.tick()
	if ramp, _ := weights("half way"); !near(ramp["east"], 0.5) {
		t.Errorf("half way: ramp weights %v, want east 0.5", ramp)
	}

	clock = clock.Add(5 * time.Second)
	e.tick()
	if ramp, _ := weights("ramped"); ramp != nil {
		t.Errorf("ramped: ramp still weighs %v", ramp)
	}
	if e.tick(); e.ramping {
		t.Error("still ramping after the longest slow_start")
	}
}

// Slow start shares are relative to the most recovered cluster: alone, a
// ramping cluster is answered whole (never an empty answer); in failover,
// the tier below keeps answering while the best tier ramps in, and only
// until then.
func TestSlowStartNeverEmpties(t *testing.T) {
	h := newTestHS(t, levelClusters+`app pay.svc1.net east west {
  policy failover
  slow_start 10s
}
app www.svc1.net east west {
  slow_start 10s
}`)
	clock := time.Now()
	h.engine.now = func() time.Time { return clock }
	answers := func(step, name string, ok ...string) {
		t.Helper()
		for range 50 {
			m, _ := query(t, h, name, dns.TypeA, false)
			if got := fmt.Sprint(addrs(m)); !slices.Contains(ok, got) {
				t.Fatalf("%s: %s answered %s, want one of %v", step, name, got, ok)
			}
		}
	}
	weights := func(step string, want map[string]string) {
		t.Helper()
		for _, n := range h.status().Names {
			got := map[string]string{}
			for c, w := range n.Weights {
				got[c] = fmt.Sprintf("%.2f", w)
			}
			if fmt.Sprint(got) != want[n.Name] {
				t.Errorf("%s: %s weighs %v, want %s", step, n.Name, got, want[n.Name])
			}
		}
	}
	const west, both = "[198.51.100.10]", "[192.0.2.10 198.51.100.10]"
	set(h, "east", sigUp)
	set(h, "west", sigUp)
	set(h, "east", sigDown)
	set(h, "west", sigDown)
	clock = clock.Add(time.Second)
	set(h, "west", sigUp) // ramping, and alone
	answers("west back alone", "pay.svc1.net.", west)
	answers("west back alone", "www.svc1.net.", west)

	clock = clock.Add(5 * time.Second)
	set(h, "east", sigUp) // both ramp: west (0.5) is answered whole, east (0.1) relative to it
	weights("both ramping", map[string]string{"pay.svc1.net.": "map[east:0.20 west:1.00]", "www.svc1.net.": "map[east:0.20 west:1.00]"})
	answers("both ramping", "pay.svc1.net.", west, both)

	clock = clock.Add(5 * time.Second)
	h.engine.tick() // west is whole; the best tier still ramps in beside it
	weights("east ramping", map[string]string{"pay.svc1.net.": "map[east:0.50 west:1.00]", "www.svc1.net.": "map[east:0.50 west:1.00]"})
	answers("east ramping", "pay.svc1.net.", west, both)

	clock = clock.Add(5 * time.Second)
	h.engine.tick()
	weights("east ramped", map[string]string{"pay.svc1.net.": "map[]", "www.svc1.net.": "map[]"})
	answers("east ramped", "pay.svc1.net.", "[192.0.2.10]")
	answers("east ramped", "www.svc1.net.", both)
}

// A weighted name whose serving clusters have no address of the family
// asked for answers NODATA (this used to panic).
func TestWeightedNoAddressOfFamily(t *testing.T) {
	for _, policy := range []string{"policy weighted", "app svc1.net east west {\n policy weighted\n}"} {
		h := newTestHS(t, levelClusters+policy)
		set(h, "east", sigDown)
		m, rcode := query(t, h, "svc1.net.", dns.TypeAAAA, false)
		if rcode != dns.RcodeSuccess || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 {
			t.Errorf("%q: AAAA with only west up: rcode %d, %v", policy, rcode, m)
		}
	}
}

// /v1/status shows each name's effective level.
func TestStatusShowsLevel(t *testing.T) {
	h := newTestHS(t, levelClusters+`app pay.svc1.net east west {
  policy failover
  all_down servfail
  ttl 1
  slow_start 30s
}
app www.svc1.net east west`)
	var doc struct {
		Names []struct {
			Name  string         `json:"name"`
			Level map[string]any `json:"level"`
		} `json:"names"`
	}
	getStatus(t, h, &doc)
	want := map[string]string{
		"pay.svc1.net.": "map[all_down:servfail policy:failover slow_start:30s ttl:1]",
		"www.svc1.net.": "map[all_down:serve_all policy:all slow_start:0s ttl:7]",
	}
	if len(doc.Names) != 2 {
		t.Fatalf("names %+v", doc.Names)
	}
	for _, n := range doc.Names {
		if got := fmt.Sprint(n.Level); got != want[n.Name] {
			t.Errorf("%s level %s, want %s", n.Name, got, want[n.Name])
		}
	}
}

// getStatus reads /v1/status as a loopback client would, into doc.
func getStatus(t *testing.T, h *HealthSwitch, doc any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/v1/status", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("/v1/status: %d %s", rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), doc); err != nil {
		t.Fatal(err)
	}
}
