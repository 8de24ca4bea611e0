package healthswitch

import (
	"context"
	"io"
	stdlog "log"
	"os"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// FuzzParse: any block text either parses or is an error; it never panics.
func FuzzParse(f *testing.F) {
	quietLog(f)
	for _, seed := range parseSeeds {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) { checkParse(t, body) })
}

// parseSeeds: the blocks of the tests, once as they are (their key_file
// does not exist) and once with a key file, so that they parse.
var parseSeeds = []string{
	twoClusters, withNS, strings.ReplaceAll(twoClusters, "KEY", fuzzKey), strings.ReplaceAll(withNS, "KEY", fuzzKey),
	"cluster a 192.0.2.1", "cluster a 192.0.2.1 {\n probe tcp://192.0.2.1:80\n}",
	"cluster a 192.0.2.1\nns ns1.svc1.net 192.0.2.53 ns2.svc1.net\nsoa 4h 1h 2w 300\nsoa_ttl 5\nns_ttl 60",
	"cluster a 192.0.2.1\napp x.svc1.net a\nns x.svc1.net 192.0.2.1", "ns", "soa 1 2 3", "cluster a 192.0.2.1 {",
}

// quietLog drops what parse logs (a zone without an NS address, say): it is
// not what FuzzParse checks, and writing it on every input slows the fuzzer.
func quietLog(tb testing.TB) {
	stdlog.SetOutput(io.Discard)
	tb.Cleanup(func() { stdlog.SetOutput(os.Stderr) })
}

// fuzzKey is a key file the seeds can name.
const fuzzKey = "testdata/fuzz.key"

func checkParse(t testing.TB, body string) {
	// Devices and pseudo files are not what this target is about, and
	// reading /dev/zero (tls CERT KEY) would not end.
	for _, p := range []string{"/dev", "/proc", "/sys"} {
		if strings.Contains(body, p) {
			return
		}
	}
	c := caddy.NewTestController("dns", "healthswitch {\n"+body+"\n}")
	c.ServerBlockKeys = []string{"svc1.net.:53", "svc2.net.:53"}
	cfg, err := parse(c)
	if err == nil && (cfg == nil || len(cfg.clusters) == 0 || len(cfg.zones) == 0) {
		t.Fatalf("parsed without error into %+v", cfg)
	}
	if err == nil {
		newNameTable(cfg, zoneSerial(cfg, 0)) // what a parsed config is used for first
	}
}

// FuzzServeDNS: every packet that unpacks is answered without a panic,
// either with a reply that packs and matches the question, or by returning
// an rcode that tells CoreDNS to write the error itself.
func FuzzServeDNS(f *testing.F) {
	h := fuzzHandler(f)
	for _, q := range serveSeeds() {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkServeDNS(t, h, data) })
}

// serveSeeds: queries for the names FuzzServeDNS's handler serves and
// around them.
func serveSeeds() [][]byte {
	var seeds [][]byte
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"svc1.net.", dns.TypeA}, {"www.svc2.net.", dns.TypeAAAA}, {"svc1.net.", dns.TypeNS}, {"ns1.svc1.net.", dns.TypeA},
		{"nope.svc1.net.", dns.TypeTXT}, {"svc2.net.", dns.TypeAXFR}, {"example.org.", dns.TypeA}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		seeds = append(seeds, b)
	}
	return seeds
}

func checkServeDNS(t testing.TB, h *HealthSwitch, data []byte) {
	req := new(dns.Msg)
	if req.Unpack(data) != nil {
		return
	}
	rec := dnstest.NewRecorder(&test.ResponseWriter{})
	rcode, err := h.ServeDNS(context.Background(), rec, req)
	if err != nil {
		t.Fatalf("ServeDNS: %v", err)
	}
	if rec.Msg == nil {
		switch {
		case rcode == dns.RcodeServerFailure, rcode == dns.RcodeRefused, rcode == dns.RcodeFormatError, rcode == dns.RcodeNotImplemented:
		case rcode == dns.RcodeSuccess && req.Opcode == dns.OpcodeNotify: // dropped, as file does
		default:
			t.Fatalf("wrote nothing and returned %s for\n%v", dns.RcodeToString[rcode], req)
		}
		return
	}
	m := rec.Msg
	if _, err := m.Pack(); err != nil {
		t.Fatalf("reply does not pack: %v\n%v", err, m)
	}
	if m.Id != req.Id || !m.Response || len(m.Question) != len(req.Question) || (len(m.Question) > 0 && m.Question[0] != req.Question[0]) {
		t.Fatalf("reply does not match the request:\n%v\nreply:\n%v", req, m)
	}
}

func fuzzHandler(f testing.TB) *HealthSwitch {
	key := writeKey(f, "0123456789abcdef0123")
	c := caddy.NewTestController("dns", "healthswitch {\n"+strings.ReplaceAll(withNS, "KEY", key)+"\n}")
	c.ServerBlockKeys = []string{"svc1.net.:53", "svc2.net.:53"}
	cfg, err := parse(c)
	if err != nil {
		f.Fatal(err)
	}
	h := newHealthSwitch(cfg)
	h.Next = test.NextHandler(dns.RcodeRefused, nil)
	return h
}

// The fuzz bodies on their seeds, without the fuzzer: what one execution
// costs beside the fuzzer's own work (docs/fuzzing.md).
func BenchmarkFuzzParseBody(b *testing.B) {
	quietLog(b)
	for b.Loop() {
		for _, s := range parseSeeds {
			checkParse(b, s)
		}
	}
}

func BenchmarkFuzzServeDNSBody(b *testing.B) {
	h, seeds := fuzzHandler(b), serveSeeds()
	for b.Loop() {
		for _, s := range seeds {
			checkServeDNS(b, h, s)
		}
	}
}
