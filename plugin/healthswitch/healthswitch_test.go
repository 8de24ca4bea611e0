package healthswitch

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// newTestHS builds a handler from a block body; every cluster gets a key so
// its sidecar signal can be driven.
func newTestHS(t *testing.T, body string) *HealthSwitch {
	t.Helper()
	key := writeKey(t, "0123456789abcdef0123")
	body = strings.ReplaceAll(body, "KEY", key)
	cfg, err := parseString(t, "healthswitch {\n"+body+"\n}")
	if err != nil {
		t.Fatal(err)
	}
	h := newHealthSwitch(cfg)
	h.Next = test.NextHandler(dns.RcodeRefused, nil) // marks "handed on"
	return h
}

// set drives a cluster's sidecar signal, as an accepted report would.
func set(h *HealthSwitch, cluster string, s signal) {
	e := h.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[cluster]
	cs.sidecar, cs.sidecarWhy = s, "test"
	e.update(cs, cause{})
}

const twoClusters = `cluster east 192.0.2.10 192.0.2.11 2001:db8::10 {
  key_file KEY
}
cluster west 198.51.100.10 {
  key_file KEY
}
app svc1.net east west
app www.svc2.net west
app a.b.svc2.net east
ttl 7`

func query(t *testing.T, h *HealthSwitch, name string, qtype uint16, tcp bool) (*dns.Msg, int) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	w := &test.ResponseWriter{}
	if tcp {
		w.TCP = true
	}
	rec := dnstest.NewRecorder(w)
	rcode, err := h.ServeDNS(context.Background(), rec, m)
	if err != nil {
		t.Fatalf("ServeDNS(%s %s): %v", name, dns.TypeToString[qtype], err)
	}
	return rec.Msg, rcode
}

func addrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	sort.Strings(out)
	return out
}

func TestServeDNSAnswers(t *testing.T) {
	h := newTestHS(t, twoClusters)
	soa1 := test.SOA("svc1.net. 7 IN SOA ns1.svc1.net. hostmaster.svc1.net. 0 14400 3600 1209600 300")
	soa2 := test.SOA("svc2.net. 7 IN SOA ns1.svc2.net. hostmaster.svc2.net. 0 14400 3600 1209600 300")
	tests := []test.Case{
		{Qname: "svc1.net.", Qtype: dns.TypeA, Answer: []dns.RR{
			test.A("svc1.net. 7 IN A 192.0.2.10"), test.A("svc1.net. 7 IN A 192.0.2.11"), test.A("svc1.net. 7 IN A 198.51.100.10")}},
		{Qname: "SVC1.Net.", Qtype: dns.TypeA, Answer: []dns.RR{
			test.A("SVC1.Net. 7 IN A 192.0.2.10"), test.A("SVC1.Net. 7 IN A 192.0.2.11"), test.A("SVC1.Net. 7 IN A 198.51.100.10")}},
		{Qname: "svc1.net.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("svc1.net. 7 IN AAAA 2001:db8::10")}},
		// Names that exist answer NODATA for every other type, never NXDOMAIN.
		{Qname: "svc1.net.", Qtype: dns.TypeMX, Ns: []dns.RR{soa1}},
		{Qname: "svc1.net.", Qtype: dns.TypeHTTPS, Ns: []dns.RR{soa1}},
		{Qname: "svc1.net.", Qtype: dns.TypeSVCB, Ns: []dns.RR{soa1}},
		{Qname: "svc1.net.", Qtype: dns.TypeTXT, Ns: []dns.RR{soa1}},
		{Qname: "www.svc2.net.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa2}}, // west has no IPv6
		{Qname: "www.svc2.net.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("www.svc2.net. 7 IN A 198.51.100.10")}},
		{Qname: "svc2.net.", Qtype: dns.TypeA, Ns: []dns.RR{soa2}},       // apex exists, is no app here
		{Qname: "b.svc2.net.", Qtype: dns.TypeA, Ns: []dns.RR{soa2}},     // empty non-terminal
		{Qname: "svc2.net.", Qtype: dns.TypeSOA, Answer: []dns.RR{soa2}}, // apex SOA
		{Qname: "svc2.net.", Qtype: dns.TypeNS, Answer: []dns.RR{test.NS("svc2.net. 3600 IN NS ns1.svc2.net.")}},
		{Qname: "www.svc2.net.", Qtype: dns.TypeSOA, Ns: []dns.RR{soa2}}, // SOA only at the apex
		{Qname: "nope.svc1.net.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa1}},
		{Qname: "x.www.svc2.net.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa2}},
	}
	for _, tc := range tests {
		t.Run(tc.Qname+"/"+dns.TypeToString[tc.Qtype], func(t *testing.T) {
			m, _ := query(t, h, tc.Qname, tc.Qtype, false)
			// The SOA serial is the load time; compare everything else.
			for _, rr := range append(m.Ns, m.Answer...) {
				if soa, ok := rr.(*dns.SOA); ok {
					soa.Serial = 0
				}
			}
			if !m.Authoritative {
				t.Error("AA bit not set")
			}
			if err := test.SortAndCheck(m, tc); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestServeDNSNotOurs(t *testing.T) {
	h := newTestHS(t, twoClusters)
	if _, rcode := query(t, h, "example.org.", dns.TypeA, false); rcode != dns.RcodeRefused {
		t.Errorf("name outside the zones: rcode %d, want it handed to the next plugin", rcode)
	}
}

// A query with other than one question is FORMERR, written by CoreDNS (the
// plugin writes nothing), as CoreDNS's own server answers it before any
// plugin; never an answer to its first question only.
func TestServeDNSOneQuestion(t *testing.T) {
	h := newTestHS(t, twoClusters)
	for _, n := range []int{0, 2} {
		req := new(dns.Msg)
		req.SetQuestion("svc1.net.", dns.TypeA)
		req.Question = append(req.Question[:0], slices.Repeat(req.Question, n)...)
		if n == 0 {
			req.Question = nil
		}
		rec := dnstest.NewRecorder(&test.ResponseWriter{})
		rcode, err := h.ServeDNS(context.Background(), rec, req)
		if rcode != dns.RcodeFormatError || err != nil || rec.Msg != nil {
			t.Errorf("%d questions: rcode %s, err %v, reply %v; want FORMERR left to CoreDNS", n, dns.RcodeToString[rcode], err, rec.Msg)
		}
	}
}

func TestFallthrough(t *testing.T) {
	h := newTestHS(t, twoClusters+"\nfallthrough")
	if _, rcode := query(t, h, "nope.svc1.net.", dns.TypeA, false); rcode != dns.RcodeRefused {
		t.Errorf("unknown name with fallthrough: rcode %d, want handed on", rcode)
	}
	if _, rcode := query(t, h, "svc1.net.", dns.TypeMX, false); rcode != dns.RcodeRefused {
		t.Errorf("other type with fallthrough: rcode %d, want handed on", rcode)
	}
	if m, _ := query(t, h, "svc1.net.", dns.TypeA, false); len(m.Answer) != 3 {
		t.Errorf("known name with fallthrough: %v", m)
	}
}

func TestDownClusterLeavesAnswers(t *testing.T) {
	h := newTestHS(t, twoClusters)
	set(h, "east", sigDown)
	m, _ := query(t, h, "svc1.net.", dns.TypeA, false)
	if got := addrs(m); fmt.Sprint(got) != "[198.51.100.10]" {
		t.Errorf("east down: A = %v", got)
	}
	// east was the only IPv6 cluster, but west is up: NODATA, not east's address.
	if m, _ := query(t, h, "svc1.net.", dns.TypeAAAA, false); len(m.Answer) != 0 || len(m.Ns) != 1 {
		t.Errorf("east down: AAAA = %v", m)
	}
	set(h, "east", sigUp)
	if m, _ := query(t, h, "svc1.net.", dns.TypeA, false); len(m.Answer) != 3 {
		t.Errorf("east back: A = %v", addrs(m))
	}
}

func TestAllDown(t *testing.T) {
	tests := []struct {
		mode      string
		wantRcode int
		wantAddrs string
	}{
		{"serve_all", dns.RcodeSuccess, "[192.0.2.10 192.0.2.11 198.51.100.10]"},
		{"nodata", dns.RcodeSuccess, "[]"},
		{"servfail", dns.RcodeServerFailure, "[]"},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			h := newTestHS(t, twoClusters+"\nall_down "+tc.mode)
			set(h, "east", sigDown)
			set(h, "west", sigStale)
			m, rcode := query(t, h, "svc1.net.", dns.TypeA, false)
			if rcode != tc.wantRcode {
				t.Fatalf("rcode %d, want %d", rcode, tc.wantRcode)
			}
			if m == nil {
				return // SERVFAIL: CoreDNS writes it
			}
			if got := fmt.Sprint(addrs(m)); got != tc.wantAddrs {
				t.Errorf("addresses %s, want %s", got, tc.wantAddrs)
			}
			if tc.mode == "nodata" && len(m.Ns) != 1 {
				t.Errorf("nodata without SOA: %v", m)
			}
		})
	}
}

func TestUnknownDown(t *testing.T) {
	h := newTestHS(t, twoClusters+"\nunknown down\nall_down nodata")
	if m, _ := query(t, h, "svc1.net.", dns.TypeA, false); len(m.Answer) != 0 {
		t.Errorf("no signal yet, unknown down: %v", addrs(m))
	}
	set(h, "west", sigUp)
	if m, _ := query(t, h, "svc1.net.", dns.TypeA, false); fmt.Sprint(addrs(m)) != "[198.51.100.10]" {
		t.Errorf("west up: %v", addrs(m))
	}
}

func TestPolicyAllRotates(t *testing.T) {
	h := newTestHS(t, twoClusters)
	first := map[string]int{}
	for range 300 {
		m, _ := query(t, h, "svc1.net.", dns.TypeA, false)
		if len(m.Answer) != 3 {
			t.Fatalf("answer %v", m.Answer)
		}
		first[m.Answer[0].(*dns.A).A.String()]++
	}
	for _, ip := range []string{"192.0.2.10", "192.0.2.11", "198.51.100.10"} {
		if first[ip] < 50 {
			t.Errorf("%s first in %d of 300 answers, want about 100", ip, first[ip])
		}
	}
}

func TestPolicyFailover(t *testing.T) {
	h := newTestHS(t, `cluster east 192.0.2.10 {
  key_file KEY
  priority 1
}
cluster west 198.51.100.10 {
  key_file KEY
  priority 2
}
cluster north 203.0.113.10 {
  key_file KEY
  priority 2
}
policy failover`)
	want := func(exp string) {
		t.Helper()
		m, _ := query(t, h, "svc1.net.", dns.TypeA, false)
		if got := fmt.Sprint(addrs(m)); got != exp {
			t.Errorf("answer %s, want %s", got, exp)
		}
	}
	want("[192.0.2.10]")
	set(h, "east", sigDown)
	want("[198.51.100.10 203.0.113.10]")
	set(h, "west", sigDown)
	want("[203.0.113.10]")
	set(h, "east", sigUp)
	want("[192.0.2.10]")
}

func TestPolicyWeighted(t *testing.T) {
	h := newTestHS(t, `cluster east 192.0.2.10 {
  key_file KEY
  weight 300
}
cluster west 198.51.100.10 198.51.100.11 {
  key_file KEY
  weight 100
}
policy weighted`)
	count := map[string]int{}
	const n = 4000
	for range n {
		m, _ := query(t, h, "svc1.net.", dns.TypeA, false)
		count[fmt.Sprint(addrs(m))]++
	}
	east := count["[192.0.2.10]"]
	west := count["[198.51.100.10 198.51.100.11]"]
	if east+west != n {
		t.Fatalf("answers mixed clusters: %v", count)
	}
	if share := float64(east) / n; share < 0.70 || share > 0.80 {
		t.Errorf("east share %.3f, want 0.75 (weights 300:100)", share)
	}
}

func TestDrainedNotAnswered(t *testing.T) {
	h := newTestHS(t, twoClusters)
	if err := h.engine.setDrained("west", true); err != nil {
		t.Fatal(err)
	}
	if m, _ := query(t, h, "svc1.net.", dns.TypeA, false); fmt.Sprint(addrs(m)) != "[192.0.2.10 192.0.2.11]" {
		t.Errorf("west drained: %v", addrs(m))
	}
	if err := h.engine.setDrained("nope", true); err == nil {
		t.Error("draining an unknown cluster: no error")
	}
}

func TestEpochIncreasesOnTransitionOnly(t *testing.T) {
	h := newTestHS(t, twoClusters)
	e0 := h.snap.Load().epoch
	set(h, "east", sigUp)
	e1 := h.snap.Load().epoch
	set(h, "east", sigUp)
	e2 := h.snap.Load().epoch
	if e1 != e0+1 || e2 != e1 {
		t.Errorf("epochs %d %d %d: want one step for unknown->up, none for up->up", e0, e1, e2)
	}
}

// A large answer over UDP must come back truncated by CoreDNS's scrub
// writer, complete over TCP: covered end to end in test/; here the handler
// must hand every address to the writer.
func TestManyAddresses(t *testing.T) {
	var ips []string
	for i := 1; i <= 60; i++ {
		ips = append(ips, fmt.Sprintf("192.0.2.%d", i))
	}
	h := newTestHS(t, "cluster big "+strings.Join(ips, " "))
	if m, _ := query(t, h, "svc1.net.", dns.TypeA, true); len(m.Answer) != 60 {
		t.Errorf("%d answers, want 60", len(m.Answer))
	}
}
