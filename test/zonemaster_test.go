package test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// dnsLab is a small DNS world on loopback for checkers and resolvers that
// only speak to port 53: a fake root (CoreDNS's file plugin on ROOT) that
// delegates hs.test to ns1.hs.test and ns2.hs.test (NS1, NS2, with glue),
// and the zone hs.test served on NS1 and NS2 by bin/coredns. Nothing leaves
// loopback: every resolver and checker here is given the lab's root hints.
type dnsLab struct {
	dir            string
	root, ns1, ns2 string // addresses, all listening on port 53
}

// newLab picks three free addresses 127.53.N.1-3 (the N from the PID, so
// parallel runs do not meet) and writes the root zone and the hints file.
func newLab(t *testing.T) *dnsLab {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real DNS servers on port 53 (-short)")
	}
	testutil.NeedRoot(t)
	l := &dnsLab{dir: t.TempDir()}
	for i := range 200 {
		p := fmt.Sprintf("127.53.%d.", (os.Getpid()+i)%200+20)
		if free53(p+"1") && free53(p+"2") && free53(p+"3") {
			l.root, l.ns1, l.ns2 = p+"1", p+"2", p+"3"
			break
		}
	}
	if l.root == "" {
		t.Fatal("no free 127.53.N.1-3 with port 53 free")
	}
	l.write(t, "root.db", fmt.Sprintf(`. 86400 IN SOA a.root-servers. hostmaster.root-servers. 1 14400 3600 1209600 300
. 86400 IN NS a.root-servers.
a.root-servers. 86400 IN A %s
hs.test. 86400 IN NS ns1.hs.test.
hs.test. 86400 IN NS ns2.hs.test.
ns1.hs.test. 86400 IN A %s
ns2.hs.test. 86400 IN A %s
`, l.root, l.ns1, l.ns2))
	l.write(t, "hints", fmt.Sprintf(". 3600000 NS a.root-servers.\na.root-servers. 3600000 A %s\n", l.root))
	return l
}

func free53(addr string) bool {
	u, err := net.ListenPacket("udp", addr+":53")
	if err != nil {
		return false
	}
	u.Close()
	l, err := net.Listen("tcp", addr+":53")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func (l *dnsLab) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(l.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// healthswitchZone is hs.test as the lab serves it with healthswitch: two
// apps, both NS names with addresses, default SOA.
func (l *dnsLab) healthswitchZone() string {
	return l.healthswitchZoneWith(fmt.Sprintf("ns ns1.hs.test %s\n        ns ns2.hs.test %s", l.ns1, l.ns2))
}

func (l *dnsLab) healthswitchZoneWith(lines string) string {
	return `healthswitch {
        cluster a 192.0.2.10
        cluster b 192.0.2.20
        app hs.test a b
        app www.hs.test a b
        ` + lines + `
        listen 127.0.0.1:0
    }`
}

// fileZone is the same zone as a zone file served by CoreDNS's file plugin:
// the reference for what a conforming server looks like to checkers.
func (l *dnsLab) fileZone(t *testing.T) string {
	db := l.write(t, "hs.db", fmt.Sprintf(`$ORIGIN hs.test.
@ 5 IN SOA ns1 hostmaster 1 14400 3600 1209600 300
@ 3600 IN NS ns1
@ 3600 IN NS ns2
ns1 3600 IN A %s
ns2 3600 IN A %s
@ 5 IN A 192.0.2.10
@ 5 IN A 192.0.2.20
www 5 IN A 192.0.2.10
www 5 IN A 192.0.2.20
`, l.ns1, l.ns2))
	return "file " + db + " hs.test"
}

// serve starts bin/coredns with the root and hs.test (zone: the plugin lines
// of its server block) and returns a stop function; it stops at cleanup too.
func (l *dnsLab) serve(t *testing.T, name, zone string) (stop func()) {
	t.Helper()
	corefile := fmt.Sprintf(".:53 {\n    bind %s\n    file %s .\n}\nhs.test:53 {\n    bind %s %s\n    %s\n}\n",
		l.root, filepath.Join(l.dir, "root.db"), l.ns1, l.ns2, zone)
	path := l.write(t, name+".Corefile", corefile)
	var out bytes.Buffer
	cmd := exec.Command(realBinary(t, "coredns"), "-conf", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s coredns output:\n%s", name, out.String())
			}
		}
	}
	t.Cleanup(stop)
	testutil.WaitFor(t, 20*time.Second, name+" coredns to answer on "+l.ns2, func() bool {
		_, err := realQuery(l.ns2+":53", "udp", "hs.test.", dns.TypeSOA)
		_, err2 := realQuery(l.root+":53", "udp", ".", dns.TypeSOA)
		return err == nil && err2 == nil
	})
	return stop
}

// zonemasterIgnored are the messages of the lab itself, not of the server
// under test; each is also reported for the file plugin's zone.
var zonemasterIgnored = map[string]string{
	"NAMESERVER_IP_PRIVATE_NETWORK": "the lab's name servers are on 127/8",
	"NAMESERVER_IP_WITHOUT_REVERSE": "the lab has no in-addr.arpa zone",
	"NO_IPV6_NS_CHILD":              "run with --no-ipv6: the lab is IPv4 loopback",
	"NO_IPV6_NS_DEL":                "run with --no-ipv6",
	"NEITHER_DNSKEY_NOR_DS":         "the test zone is not signed (healthswitch does not sign)",
	"NOT_SIGNED":                    "the same",
	"Z09_MISSING_MAIL_TARGET":       "the test zone has no MX: healthswitch apps answer A/AAAA only",
}

// zonemaster runs every test of zonemaster-cli against hs.test from the lab's
// root and returns "LEVEL TESTCASE TAG" of each message, sorted, distinct.
func (l *dnsLab) zonemaster(t *testing.T) ([]string, string) {
	t.Helper()
	cmd := exec.Command("zonemaster-cli", "hs.test", "--hints", filepath.Join(l.dir, "hints"), "--no-ipv6",
		"--level", "INFO", "--raw", "--show-testcase", "--no-progress")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("zonemaster-cli: %v\n%s", err, out)
	}
	var tags []string
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !slices.Contains([]string{"CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO"}, f[1]) {
			continue
		}
		tags = append(tags, f[1]+" "+f[2]+" "+f[3])
	}
	slices.Sort(tags)
	return slices.Compact(tags), string(out)
}

// TestZonemasterHealthswitchLikeFile: Zonemaster reports nothing for a
// healthswitch zone with `ns` addresses that it does not also report for the
// same zone served from a zone file, and nothing above INFO but the lab's
// own messages.
func TestZonemasterHealthswitchLikeFile(t *testing.T) {
	testutil.Need(t, "zonemaster-cli")
	l := newLab(t)

	stop := l.serve(t, "healthswitch", l.healthswitchZone())
	hs, hsOut := l.zonemaster(t)
	stop()
	stop = l.serve(t, "file", l.fileZone(t))
	ref, refOut := l.zonemaster(t)
	stop()

	for _, m := range hs {
		tag := strings.Fields(m)[2]
		if !slices.Contains(ref, m) {
			t.Errorf("Zonemaster says %q for healthswitch and not for the file plugin", m)
		}
		if !strings.HasPrefix(m, "INFO ") && zonemasterIgnored[tag] == "" {
			t.Errorf("Zonemaster says %q for healthswitch", m)
		}
	}
	// What the issue was about, and proof that the checks ran.
	for _, want := range []string{"INFO NAMESERVER03 AXFR_FAILURE", "INFO DELEGATION04 ARE_AUTHORITATIVE",
		"INFO ZONE05 EXPIRE_MINIMUM_VALUE_OK", "INFO CONSISTENCY05 ADDRESSES_MATCH", "INFO NAMESERVER02 EDNS0_SUPPORT",
		"INFO NAMESERVER06 CAN_BE_RESOLVED", "INFO DELEGATION07 NAMES_MATCH", "INFO ZONE02 REFRESH_MINIMUM_VALUE_OK"} {
		if !slices.Contains(hs, want) {
			t.Errorf("Zonemaster did not say %q for healthswitch", want)
		}
	}
	if t.Failed() {
		t.Logf("healthswitch:\n%s\nfile:\n%s", hsOut, refOut)
	}
}
