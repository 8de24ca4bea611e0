package test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// resolver is a recursive resolver of the lab, listening on 127.0.0.1.
type resolver struct {
	name, addr string
}

// startNamed runs BIND 9 (named -g) as a recursive resolver whose root
// hints are the lab's root.
func (l *dnsLab) startNamed(t *testing.T) resolver {
	t.Helper()
	port := freePort(t)
	dir := filepath.Join(l.dir, "named")
	conf := l.write(t, "named.conf", fmt.Sprintf(`options {
    directory "%[1]s";
    pid-file "%[1]s/named.pid";
    session-keyfile "%[1]s/session.key";
    managed-keys-directory "%[1]s";
    listen-on port %[2]d { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion yes;
    allow-query { 127.0.0.1; };
    allow-recursion { 127.0.0.1; };
    dnssec-validation no;
    notify no;
};
controls { };
zone "." { type hint; file "%[3]s"; };
`, dir, port, filepath.Join(l.dir, "hints")))
	return l.startResolver(t, "named", port, dir, "named", "-g", "-4", "-c", conf)
}

// startUnbound runs Unbound (unbound -d) the same way; it serves test.
// (RFC 6761) itself unless told not to.
func (l *dnsLab) startUnbound(t *testing.T) resolver {
	t.Helper()
	port := freePort(t)
	dir := filepath.Join(l.dir, "unbound")
	conf := l.write(t, "unbound.conf", fmt.Sprintf(`server:
    interface: 127.0.0.1
    port: %[2]d
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "%[1]s"
    pidfile: "%[1]s/unbound.pid"
    use-syslog: no
    logfile: ""
    root-hints: "%[3]s"
    do-not-query-localhost: no
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
remote-control:
    control-enable: no
`, dir, port, filepath.Join(l.dir, "hints")))
	return l.startResolver(t, "unbound", port, dir, "unbound", "-d", "-c", conf)
}

func (l *dnsLab) startResolver(t *testing.T, name string, port int, dir string, argv ...string) resolver {
	t.Helper()
	if out, err := exec.Command("mkdir", "-p", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	testutil.StartLogged(t, name, exec.Command(argv[0], argv[1:]...))
	r := resolver{name: name, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	testutil.WaitFor(t, 20*time.Second, name+" to answer", func() bool {
		m, err := recursiveQuery(r.addr, ".", dns.TypeSOA)
		return err == nil && m.Rcode == dns.RcodeSuccess
	})
	return r
}

func recursiveQuery(addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// resolverCase is one question asked through a resolver and what must come
// back: the rcode and the sorted answer data ("" for NODATA/NXDOMAIN).
type resolverCase struct {
	name  string
	qtype uint16
	rcode int
	want  string
}

func (l *dnsLab) resolverCases(withNS bool) []resolverCase {
	cases := []resolverCase{
		{"hs.test.", dns.TypeA, dns.RcodeSuccess, "192.0.2.10 192.0.2.20"},
		{"WWW.hs.test.", dns.TypeA, dns.RcodeSuccess, "192.0.2.10 192.0.2.20"},
		{"www.hs.test.", dns.TypeAAAA, dns.RcodeSuccess, ""}, // NODATA: no cluster has IPv6
		{"www.hs.test.", dns.TypeMX, dns.RcodeSuccess, ""},
		{"ns1.hs.test.", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"nope.hs.test.", dns.TypeA, dns.RcodeNameError, ""},
		{"x.www.hs.test.", dns.TypeA, dns.RcodeNameError, ""},
	}
	if withNS {
		return append(cases,
			resolverCase{"ns1.hs.test.", dns.TypeA, dns.RcodeSuccess, l.ns1},
			resolverCase{"ns2.hs.test.", dns.TypeA, dns.RcodeSuccess, l.ns2},
			resolverCase{"hs.test.", dns.TypeNS, dns.RcodeSuccess, "ns1.hs.test. ns2.hs.test."})
	}
	// The default NS name exists, without address: NODATA, not NXDOMAIN.
	return append(cases,
		resolverCase{"ns1.hs.test.", dns.TypeA, dns.RcodeSuccess, ""},
		resolverCase{"hs.test.", dns.TypeNS, dns.RcodeSuccess, "ns1.hs.test."})
}

func answerData(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.NS:
			out = append(out, r.Ns)
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestResolversInFrontOfHealthswitch: BIND 9 and Unbound, iterating from the
// lab's root to bin/coredns, resolve the zone's names, give NODATA and
// NXDOMAIN where due, and never SERVFAIL a name of the zone, asked again and
// again for several seconds (BIND used to fail the whole zone in 5-7 s
// windows when the zone's own NS name did not exist). With `ns` addresses,
// and with the default NS name, which has none.
func TestResolversInFrontOfHealthswitch(t *testing.T) {
	testutil.Need(t, "named", "unbound")
	for _, tc := range []struct {
		name   string
		withNS bool
	}{{"ns with addresses", true}, {"default ns1.ZONE", false}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			zone := l.healthswitchZone()
			if !tc.withNS {
				zone = l.healthswitchZoneWith("")
			}
			l.serve(t, "healthswitch", zone)
			l.askForAWhile(t, []resolver{l.startNamed(t), l.startUnbound(t)}, l.resolverCases(tc.withNS), 6*time.Second)
		})
	}
}

// askForAWhile asks every case through every resolver, round after round,
// for d, and fails on the first wrong answer.
func (l *dnsLab) askForAWhile(t *testing.T, resolvers []resolver, cases []resolverCase, d time.Duration) {
	t.Helper()
	until := time.Now().Add(d)
	for round := 0; round == 0 || time.Now().Before(until); round++ {
		for _, r := range resolvers {
			for _, c := range cases {
				m, err := recursiveQuery(r.addr, c.name, c.qtype)
				if err != nil {
					t.Fatalf("round %d, %s: %s %s: %v", round, r.name, c.name, dns.TypeToString[c.qtype], err)
				}
				if m.Rcode != c.rcode || answerData(m) != c.want {
					t.Fatalf("round %d, %s: %s %s: %s %q, want %s %q\n%v", round, r.name, c.name, dns.TypeToString[c.qtype],
						dns.RcodeToString[m.Rcode], answerData(m), dns.RcodeToString[c.rcode], c.want, m)
				}
			}
		}
		time.Sleep(250 * time.Millisecond) // paced load: the check is that no round fails
	}
}

// TestRealBinaryRefusesTransfersAndDropsNotify: over the wire, AXFR and IXFR
// are REFUSED (TCP and UDP), a NOTIFY gets no reply (as the file plugin does
// for a zone it is the primary of), an UPDATE is NOTIMP, and the NS answer
// carries the name server's address as glue.
func TestRealBinaryRefusesTransfersAndDropsNotify(t *testing.T) {
	s := realCoreDNS(t, pushCorefile(t, "        ns ns1.svc1.net 127.0.0.53"))
	ask := func(network string, build func(m *dns.Msg)) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion("svc1.net.", dns.TypeSOA)
		build(m)
		c := &dns.Client{Net: network, Timeout: 500 * time.Millisecond}
		r, _, err := c.Exchange(m, s.dns)
		return r, err
	}
	for _, tc := range []struct {
		name, network string
		build         func(m *dns.Msg)
		rcode         int
	}{
		{"AXFR over TCP", "tcp", func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAXFR }, dns.RcodeRefused},
		{"AXFR over UDP", "udp", func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAXFR }, dns.RcodeRefused},
		{"IXFR over TCP", "tcp", func(m *dns.Msg) {
			m.Question[0].Qtype = dns.TypeIXFR
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "svc1.net.", Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: "a.", Mbox: "b.", Serial: 1}}
		}, dns.RcodeRefused},
		{"UPDATE", "udp", func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }, dns.RcodeNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ask(tc.network, tc.build)
			if err != nil || r.Rcode != tc.rcode || len(r.Answer) != 0 {
				t.Errorf("got %v (err %v), want %s and no answer", r, err, dns.RcodeToString[tc.rcode])
			}
		})
	}
	if r, err := ask("udp", func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify; m.Authoritative = true }); err == nil {
		t.Errorf("NOTIFY was answered, want it dropped:\n%v", r)
	}
	r, err := realQuery(s.dns, "udp", "svc1.net.", dns.TypeNS)
	if err != nil || len(r.Answer) != 1 || len(r.Extra) != 1 || r.Extra[0].(*dns.A).A.String() != "127.0.0.53" {
		t.Errorf("NS svc1.net.: %v (err %v), want ns1.svc1.net. with its glue", r, err)
	}
}
