package healthswitch

import (
	"context"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

const withNS = twoClusters + `
ns ns1.svc1.net 192.0.2.53 2001:db8::53
ns ns2.dns.svc1.net 198.51.100.53
ns ns3.svc2.net
ns ns.elsewhere.example
soa 2h 30m 2w 60
soa_ttl 10
ns_ttl 600`

// TestServeDNSNameservers: in-zone NS names answer their addresses, NS
// answers carry them as glue, an in-zone NS name without address exists
// (NODATA), and the SOA carries the configured timers and TTLs.
func TestServeDNSNameservers(t *testing.T) {
	h := newTestHS(t, withNS)
	soa1 := test.SOA("svc1.net. 10 IN SOA ns1.svc1.net. hostmaster.svc1.net. 0 7200 1800 1209600 60")
	glue := []dns.RR{
		test.A("ns1.svc1.net. 600 IN A 192.0.2.53"), test.AAAA("ns1.svc1.net. 600 IN AAAA 2001:db8::53"),
		test.A("ns2.dns.svc1.net. 600 IN A 198.51.100.53"),
	}
	nsSet := func(zone string) []dns.RR {
		return []dns.RR{
			test.NS(zone + " 600 IN NS ns.elsewhere.example."), test.NS(zone + " 600 IN NS ns1.svc1.net."),
			test.NS(zone + " 600 IN NS ns2.dns.svc1.net."), test.NS(zone + " 600 IN NS ns3.svc2.net."),
		}
	}
	tests := []test.Case{
		{Qname: "ns1.svc1.net.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ns1.svc1.net. 600 IN A 192.0.2.53")}},
		{Qname: "NS1.svc1.net.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("NS1.svc1.net. 600 IN AAAA 2001:db8::53")}},
		{Qname: "ns2.dns.svc1.net.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("ns2.dns.svc1.net. 600 IN A 198.51.100.53")}},
		{Qname: "ns2.dns.svc1.net.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa1}}, // no IPv6: NODATA
		{Qname: "ns1.svc1.net.", Qtype: dns.TypeMX, Ns: []dns.RR{soa1}},
		{Qname: "dns.svc1.net.", Qtype: dns.TypeA, Ns: []dns.RR{soa1}}, // empty non-terminal
		{Qname: "ns3.svc2.net.", Qtype: dns.TypeA, Ns: []dns.RR{test.SOA("svc2.net. 10 IN SOA ns1.svc1.net. hostmaster.svc2.net. 0 7200 1800 1209600 60")}},
		{Qname: "svc1.net.", Qtype: dns.TypeNS, Answer: nsSet("svc1.net."), Extra: glue},
		{Qname: "svc2.net.", Qtype: dns.TypeNS, Answer: nsSet("svc2.net."), Extra: glue},
		{Qname: "svc1.net.", Qtype: dns.TypeSOA, Answer: []dns.RR{soa1}},
		{Qname: "ns4.svc1.net.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa1}},
		// Apps answer as before.
		{Qname: "svc1.net.", Qtype: dns.TypeA, Answer: []dns.RR{
			test.A("svc1.net. 7 IN A 192.0.2.10"), test.A("svc1.net. 7 IN A 192.0.2.11"), test.A("svc1.net. 7 IN A 198.51.100.10")}},
	}
	for _, tc := range tests {
		t.Run(tc.Qname+"/"+dns.TypeToString[tc.Qtype], func(t *testing.T) {
			m, _ := query(t, h, tc.Qname, tc.Qtype, false)
			checkSOA(t, m, h.cfg)
			if !m.Authoritative {
				t.Error("AA bit not set")
			}
			if err := test.SortAndCheck(m, tc); err != nil {
				t.Error(err)
			}
		})
	}
}

// checkSOA checks every SOA's serial and timers (SortAndCheck compares only
// the header), then zeroes the serial.
func checkSOA(t *testing.T, m *dns.Msg, cfg *config) {
	t.Helper()
	for _, rr := range append(m.Ns, m.Answer...) {
		soa, ok := rr.(*dns.SOA)
		if !ok {
			continue
		}
		if soa.Serial != zoneSerial(cfg, 0) {
			t.Errorf("serial %d, want %d", soa.Serial, zoneSerial(cfg, 0))
		}
		got := soaTimers{soa.Refresh, soa.Retry, soa.Expire, soa.Minttl}
		if got != cfg.soa {
			t.Errorf("SOA timers %+v, want %+v", got, cfg.soa)
		}
		soa.Serial = 0
	}
}

// TestServeDNSDefaultNS: without `ns`, the NS is ns1.ZONE, which exists
// (NODATA): an NXDOMAIN for the zone's own NS name makes BIND resolvers fail
// the whole zone.
func TestServeDNSDefaultNS(t *testing.T) {
	h := newTestHS(t, twoClusters)
	for _, q := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, _ := query(t, h, "ns1.svc1.net.", q, false)
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 {
			t.Errorf("ns1.svc1.net. %s: want NODATA, got\n%v", dns.TypeToString[q], m)
		}
	}
	m, _ := query(t, h, "svc1.net.", dns.TypeNS, false)
	if len(m.Answer) != 1 || len(m.Extra) != 0 {
		t.Errorf("NS without addresses: want one NS and no glue, got\n%v", m)
	}
}

// TestServeDNSNotQueries: zone transfers are refused, NOTIFY is dropped,
// other opcodes are not implemented; the CoreDNS server writes the error
// replies for the rcodes returned, so nothing must be written here.
func TestServeDNSNotQueries(t *testing.T) {
	h := newTestHS(t, withNS)
	tests := []struct {
		name   string
		opcode int
		qname  string
		qtype  uint16
		rcode  int
	}{
		{"AXFR", dns.OpcodeQuery, "svc1.net.", dns.TypeAXFR, dns.RcodeRefused},
		{"IXFR", dns.OpcodeQuery, "svc2.net.", dns.TypeIXFR, dns.RcodeRefused},
		{"AXFR of a name below", dns.OpcodeQuery, "www.svc2.net.", dns.TypeAXFR, dns.RcodeRefused},
		{"NOTIFY dropped", dns.OpcodeNotify, "svc1.net.", dns.TypeSOA, dns.RcodeSuccess},
		{"UPDATE", dns.OpcodeUpdate, "svc1.net.", dns.TypeSOA, dns.RcodeNotImplemented},
		{"STATUS", dns.OpcodeStatus, "svc1.net.", dns.TypeA, dns.RcodeNotImplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tc.qname, tc.qtype)
			m.Opcode = tc.opcode
			rec := dnstest.NewRecorder(&test.ResponseWriter{})
			rcode, err := h.ServeDNS(context.Background(), rec, m)
			if err != nil || rcode != tc.rcode {
				t.Errorf("rcode %s (err %v), want %s", dns.RcodeToString[rcode], err, dns.RcodeToString[tc.rcode])
			}
			if rec.Msg != nil {
				t.Errorf("wrote a reply, want none:\n%v", rec.Msg)
			}
		})
	}
	// Transfers of names that are not ours still go to the next plugin.
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeAXFR)
	if rcode, _ := h.ServeDNS(context.Background(), dnstest.NewRecorder(&test.ResponseWriter{}), m); rcode != dns.RcodeRefused {
		t.Errorf("AXFR example.org.: rcode %d, want the next plugin's", rcode)
	}
}

// TestZoneSerial: the serial is a function of the configuration, the same
// for every process that loads it, and changes with what the zone answers.
func TestZoneSerial(t *testing.T) {
	a, b := newTestHS(t, withNS), newTestHS(t, withNS)
	serial := func(h *HealthSwitch) uint32 {
		m, _ := query(t, h, "svc1.net.", dns.TypeSOA, false)
		return m.Answer[0].(*dns.SOA).Serial
	}
	if serial(a) != serial(b) {
		t.Errorf("same configuration, serials %d and %d", serial(a), serial(b))
	}
	for _, change := range []string{"ttl 8", "app extra.svc1.net east", "policy failover", "ns ns9.svc1.net 192.0.2.99", "soa 3h 1h 2w 60"} {
		c := newTestHS(t, withNS+"\n"+change)
		if serial(c) == serial(a) {
			t.Errorf("%q left the serial at %d", change, serial(a))
		}
	}
	if zoneSerial(a.cfg, 1) == zoneSerial(a.cfg, 0) {
		t.Error("the state generation does not change the serial")
	}
}

func TestParseZoneRecords(t *testing.T) {
	cfg, err := parseString(t, "healthswitch {\n cluster a 192.0.2.1\n ns ns1.svc1.net 192.0.2.53 2001:DB8::53 ns2.svc1.net\n ns dns.example.org\n soa 7200 900 604800 30\n soa_ttl 60\n ns_ttl 86400\n}")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.nameservers) != 3 || len(cfg.nameservers[0].v4) != 1 || len(cfg.nameservers[0].v6) != 1 || cfg.nameservers[1].hasAddress() ||
		cfg.nameservers[2].name != "dns.example.org." || cfg.soa != (soaTimers{7200, 900, 604800, 30}) || cfg.soaTTL != 60 || cfg.nsTTL != 86400 {
		t.Errorf("config: %+v", cfg)
	}
	def, err := parseString(t, "healthswitch {\n cluster a 192.0.2.1\n}")
	if err != nil {
		t.Fatal(err)
	}
	if def.soa != defaultSOA || def.soaTTL != -1 || def.nsTTL != defaultNSTTL || def.soa.expire < 604800 {
		t.Errorf("defaults: %+v", def)
	}
	dur, err := parseString(t, "healthswitch {\n cluster a 192.0.2.1\n soa 4h 1h 2W 5m\n}")
	if err != nil || dur.soa != (soaTimers{14400, 3600, 1209600, 300}) {
		t.Errorf("durations: %+v, %v", dur, err)
	}
}

func TestParseZoneRecordErrors(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"address outside the zones", "ns ns1.example.org 192.0.2.53", `Testfile:3 - Error during parsing: ns ns1.example.org. is outside this server block's zones`},
		{"address first", "ns 192.0.2.53", "the name comes first"},
		{"not a name", "ns ns1..svc1.net", "is neither a domain name nor an IP address"},
		{"listed twice", "ns ns1.svc1.net\n ns NS1.svc1.net", `Testfile:4 - Error during parsing: ns ns1.svc1.net. is listed twice (line 3)`},
		{"address twice", "ns ns1.svc1.net 192.0.2.53 192.0.2.53", "address 192.0.2.53 is listed twice"},
		{"ns is an app", "app www.svc1.net a\n ns www.svc1.net 192.0.2.53", `Testfile:4 - Error during parsing: ns www.svc1.net. is also an app name (line 3)`},
		{"ns is the default app", "ns svc1.net 192.0.2.53", "ns svc1.net. is also an app name"},
		{"ns without args", "ns", "Wrong argument count"},
		{"soa arity", "soa 7200 900 604800", "Wrong argument count"},
		{"soa not a number", "soa 2h 1h 2x 60", `soa: "2x" is not a whole number of seconds`},
		{"soa empty argument", `soa 0 "" "" 0`, `soa: "" is not a whole number of seconds`},
		{"soa retry not below refresh", "soa 3600 3600 604800 60", "soa: retry 3600 must be less than refresh 3600"},
		{"soa expire below refresh", "soa 7200 900 3600 60", "soa: expire 3600 must be at least refresh 7200"},
		{"soa zero", "soa 0 0 0 0", "must be greater than 0"},
		{"soa minimum too large", "soa 7200 900 604800 90000", "soa: minimum 90000 is out of range"},
		{"soa_ttl range", "soa_ttl -1", "soa_ttl: -1 is out of range"},
		{"ns_ttl arity", "ns_ttl 1 2", "Wrong argument count"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseString(t, "healthswitch {\n cluster a 192.0.2.1\n "+tc.body+"\n}")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\n does not contain %q", err, tc.want)
			}
		})
	}
}
