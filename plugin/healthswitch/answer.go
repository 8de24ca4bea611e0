package healthswitch

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// snapshot is everything a query needs, built whenever a cluster changes
// state and never modified after it is published. The name table is built
// once per configuration and shared by every snapshot; a transition only
// rebuilds the answer sets, one per distinct list of serving clusters and
// level, so its cost does not grow with the number of names.
type snapshot struct {
	epoch uint64
	*nameTable
	sets []setPair // indexed by entry.set
}

// nameTable is the part of the answers that only the configuration changes.
type nameTable struct {
	names  map[string]*entry // every name that exists: apexes, apps and the empty non-terminals between them
	zones  map[string]*zoneRecords
	groups []appGroup // the distinct cluster lists and levels of the apps; entry.set indexes them
}

// appGroup is what apps answered alike share: their clusters and level.
type appGroup struct {
	clusters []string
	level    *level
}

type setPair struct{ a, aaaa *answerSet }

type zoneRecords struct {
	soa  *dns.SOA
	ns   []*dns.NS
	glue []dns.RR // A and AAAA of the NS names that have addresses
}

// entry is one existing name.
type entry struct {
	zone string
	apex bool
	set  int         // index into snapshot.sets; -1 when the name is no app
	ns   *nameserver // set when the name is an in-zone NS name
}

// answers returns the A or AAAA answer set of e, nil when e is no app.
func (s *snapshot) answers(e *entry, qtype uint16) *answerSet {
	if e.set < 0 {
		return nil
	}
	if qtype == dns.TypeAAAA {
		return s.sets[e.set].aaaa
	}
	return s.sets[e.set].a
}

// answerSet holds what A or AAAA queries for one name are answered with.
type answerSet struct {
	groups   []group  // serving clusters; empty when none is up
	flat     []net.IP // all addresses of groups when every share is whole (policy all, no ramp)
	weighted bool     // pick one group in proportion to weight
	total    float64  // sum of group weights
	fallback []net.IP // every configured address, for all_down serve_all
	allDown  bool     // no cluster of the name is up
	level    *level   // the names' availability level: TTL, all_down, policy
}

type group struct {
	cluster string
	ips     []net.IP
	weight  float64 // weighted policy: share of answers; policy all: probability of being included (slow start)
}

// pick returns the addresses to answer with; the slice is the caller's.
func (s *answerSet) pick() []net.IP {
	switch {
	case s.flat != nil:
		return rotate(s.flat)
	case s.weighted:
		if len(s.groups) == 0 {
			return nil // no serving cluster has an address of this family
		}
		x := rand.Float64() * s.total
		for _, g := range s.groups {
			if x < g.weight {
				return rotate(g.ips)
			}
			x -= g.weight
		}
		return rotate(s.groups[len(s.groups)-1].ips)
	}
	var ips []net.IP
	for _, g := range s.groups {
		if g.weight >= 1 || rand.Float64() < g.weight {
			ips = append(ips, g.ips...)
		}
	}
	return rotate(ips)
}

// rotate returns a copy of ips starting at a random position, so that clients
// that take the first address spread over all of them.
func rotate(ips []net.IP) []net.IP {
	out := make([]net.IP, len(ips))
	if len(ips) == 0 {
		return out
	}
	k := rand.IntN(len(ips))
	n := copy(out, ips[k:])
	copy(out[n:], ips[:k])
	return out
}

// clusterView is what buildSnapshot needs to know of each cluster.
type clusterView struct {
	cfg     *clusterConfig
	serving bool          // up, or unknown and treated as up
	upFor   time.Duration // since it came back up while it may still ramp in; -1: not ramping
}

// share is the fraction of its answers the cluster gets in a name whose
// level ramps over slowStart: in (0,1], below 1 while it ramps in (from
// minShare, linearly).
func (v clusterView) share(slowStart time.Duration) float64 {
	if v.upFor < 0 || v.upFor >= slowStart {
		return 1
	}
	return max(minShare, float64(v.upFor)/float64(slowStart))
}

func newNameTable(cfg *config, serial uint32) *nameTable {
	t := &nameTable{names: map[string]*entry{}, zones: map[string]*zoneRecords{}}
	for _, z := range cfg.zones {
		t.zones[z] = zoneRecordsFor(cfg, z, serial)
		t.names[z] = &entry{zone: z, apex: true, set: -1}
	}
	type groupKey struct {
		clusters string
		level    level
	}
	groupIndex := map[groupKey]int{}
	for _, ap := range cfg.apps {
		key := groupKey{strings.Join(ap.clusters, " "), *ap.level}
		g, ok := groupIndex[key]
		if !ok {
			g = len(t.groups)
			groupIndex[key] = g
			t.groups = append(t.groups, appGroup{ap.clusters, ap.level})
		}
		t.add(ap.name, ap.zone).set = g
	}
	// In-zone NS names exist: with their addresses, or NODATA.
	var nss []nameserver
	for _, z := range cfg.zones {
		nss = append(nss, nameserversOf(cfg, z)...)
	}
	for i := range nss {
		if zone := plugin.Zones(cfg.zones).Matches(nss[i].name); zone != "" {
			t.add(nss[i].name, zone).ns = &nss[i]
		}
	}
	return t
}

// add makes name exist, with the names between it and its zone: those
// answer NODATA, never NXDOMAIN (RFC 8020).
func (t *nameTable) add(name, zone string) *entry {
	e := t.names[name]
	if e == nil {
		e = &entry{zone: zone, set: -1}
		t.names[name] = e
	}
	for n := parentName(name); n != "" && n != zone && dns.IsSubDomain(zone, n); n = parentName(n) {
		if t.names[n] == nil {
			t.names[n] = &entry{zone: zone, set: -1}
		}
	}
	return e
}

func buildSnapshot(cfg *config, epoch uint64, views map[string]clusterView, table *nameTable) *snapshot {
	s := &snapshot{epoch: epoch, nameTable: table, sets: make([]setPair, len(table.groups))}
	for i, g := range table.groups {
		s.sets[i].a, s.sets[i].aaaa = answerSets(g.level, g.clusters, views)
	}
	return s
}

func parentName(n string) string {
	i, end := dns.NextLabel(n, 0)
	if end {
		return ""
	}
	return n[i:]
}

func answerSets(lvl *level, clusters []string, views map[string]clusterView) (a, aaaa *answerSet) {
	a, aaaa = &answerSet{level: lvl}, &answerSet{level: lvl}
	var up []clusterView
	for _, name := range clusters {
		v := views[name]
		a.fallback = append(a.fallback, v.cfg.v4...)
		aaaa.fallback = append(aaaa.fallback, v.cfg.v6...)
		if v.serving {
			up = append(up, v)
		}
	}
	if len(up) == 0 {
		a.allDown, aaaa.allDown = true, true
		return a, aaaa
	}
	if lvl.policy == policyFailover {
		up = failoverTiers(up, lvl.slowStart)
	}
	// Slow start shares are relative to the most recovered cluster: when
	// they all ramp (nothing whole to take the answers from), the one back
	// longest is answered whole, so the name is not answered empty meanwhile.
	most := 0.0
	for _, v := range up {
		most = max(most, v.share(lvl.slowStart))
	}
	fill(a, up, most, func(c *clusterConfig) []net.IP { return c.v4 })
	fill(aaaa, up, most, func(c *clusterConfig) []net.IP { return c.v6 })
	return a, aaaa
}

// failoverTiers keeps the best priority tier of the up clusters. While every
// cluster of it ramps in (slow start), the tiers below it are kept too, down
// to the first with a cluster answered whole (or all of them): those carry
// the answers the ramping tier does not take yet, until its ramp ends.
func failoverTiers(up []clusterView, slowStart time.Duration) []clusterView {
	prios := make([]int, 0, len(up))
	for _, v := range up {
		prios = append(prios, v.cfg.priority)
	}
	slices.Sort(prios)
	prios = slices.Compact(prios)
	var keep []clusterView
	for _, p := range prios {
		whole := false
		for _, v := range up {
			if v.cfg.priority == p {
				keep = append(keep, v)
				whole = whole || v.share(slowStart) >= 1
			}
		}
		if whole {
			break
		}
	}
	return keep
}

// fill makes the answer set of one address family; a cluster's share is its
// slow start share over most, the largest of them.
func fill(s *answerSet, up []clusterView, most float64, ips func(*clusterConfig) []net.IP) {
	s.weighted = s.level.policy == policyWeighted
	whole := true
	for _, v := range up {
		addrs := ips(v.cfg)
		if len(addrs) == 0 {
			continue
		}
		share := min(1, v.share(s.level.slowStart)/most)
		w := share
		if s.weighted {
			w *= float64(v.cfg.weight)
			if w == 0 {
				continue
			}
		}
		whole = whole && share >= 1
		s.groups = append(s.groups, group{cluster: v.cfg.name, ips: addrs, weight: w})
		s.total += w
	}
	if s.weighted || !whole {
		return
	}
	s.flat = []net.IP{}
	for _, g := range s.groups {
		s.flat = append(s.flat, g.ips...)
	}
}

// nameserversOf returns the `ns` lines, or the default ns1.ZONE.
func nameserversOf(cfg *config, zone string) []nameserver {
	if len(cfg.nameservers) > 0 {
		return cfg.nameservers
	}
	return []nameserver{{name: dnsJoin("ns1", zone)}}
}

func zoneRecordsFor(cfg *config, zone string, serial uint32) *zoneRecords {
	nss := nameserversOf(cfg, zone)
	mbox := cfg.hostmaster
	if mbox == "" {
		mbox = dnsJoin("hostmaster", zone)
	}
	soaTTL := cfg.ttl
	if cfg.soaTTL >= 0 {
		soaTTL = uint32(cfg.soaTTL)
	}
	zr := &zoneRecords{soa: &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: soaTTL},
		Ns:      nss[0].name,
		Mbox:    mbox,
		Serial:  serial,
		Refresh: cfg.soa.refresh,
		Retry:   cfg.soa.retry,
		Expire:  cfg.soa.expire,
		Minttl:  cfg.soa.minimum,
	}}
	for _, ns := range nss {
		zr.ns = append(zr.ns, &dns.NS{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: cfg.nsTTL}, Ns: ns.name})
		zr.glue = append(zr.glue, addressRecords(ns.name, dns.TypeA, cfg.nsTTL, ns.v4)...)
		zr.glue = append(zr.glue, addressRecords(ns.name, dns.TypeAAAA, cfg.nsTTL, ns.v6)...)
	}
	return zr
}

func dnsJoin(label, zone string) string {
	if zone == "." {
		return label + "."
	}
	return label + "." + zone
}

// zoneSerial is the SOA serial: a hash of everything in the configuration
// that the zone's answers are made of, and of a state generation (0 until
// state is kept). So replicas with the same configuration and state agree,
// and a restart does not change it. Zone transfers are refused, so no
// secondary compares serials (RFC 1982 order): they only tell versions apart.
func zoneSerial(cfg *config, stateGen uint64) uint32 {
	h := fnv.New32a()
	w := func(format string, a ...any) { fmt.Fprintf(h, format, a...) }
	w("zones %v\n", cfg.zones)
	for _, cl := range cfg.clusters {
		w("cluster %s %v %v %d %d\n", cl.name, cl.v4, cl.v6, cl.priority, cl.weight)
	}
	for _, ap := range cfg.apps {
		w("app %s %v\n", ap.name, ap.clusters)
		if ap.set != 0 { // so a configuration without app blocks keeps its serial
			w("level %+v\n", *ap.level)
		}
	}
	w("policy %s ttl %d all_down %s unknown %t slow_start %s\n", cfg.policy, cfg.ttl, cfg.allDown, cfg.unknownUp, cfg.slowStart)
	for _, ns := range cfg.nameservers {
		w("ns %s %v %v\n", ns.name, ns.v4, ns.v6)
	}
	w("hostmaster %s soa %+v soa_ttl %d ns_ttl %d\n", cfg.hostmaster, cfg.soa, cfg.soaTTL, cfg.nsTTL)
	w("state %d\n", stateGen)
	if s := h.Sum32(); s != 0 {
		return s
	}
	return 1
}

// The record builders below make fresh records for every reply: later
// plugins (rewrite, loadbalance, cache) may change what we hand them.

func addressRecords(owner string, qtype uint16, ttl uint32, ips []net.IP) []dns.RR {
	rrs := make([]dns.RR, len(ips))
	for i, ip := range ips {
		hdr := dns.RR_Header{Name: owner, Rrtype: qtype, Class: dns.ClassINET, Ttl: ttl}
		if qtype == dns.TypeA {
			rrs[i] = &dns.A{Hdr: hdr, A: ip}
		} else {
			rrs[i] = &dns.AAAA{Hdr: hdr, AAAA: ip}
		}
	}
	return rrs
}

func soaRecord(zr *zoneRecords) []dns.RR { return []dns.RR{dns.Copy(zr.soa)} }

func glueRecords(zr *zoneRecords) []dns.RR {
	if len(zr.glue) == 0 {
		return nil
	}
	rrs := make([]dns.RR, len(zr.glue))
	for i, rr := range zr.glue {
		rrs[i] = dns.Copy(rr)
	}
	return rrs
}

func nsRecords(zr *zoneRecords, owner string) []dns.RR {
	rrs := make([]dns.RR, len(zr.ns))
	for i, ns := range zr.ns {
		c := *ns
		c.Hdr.Name = owner
		rrs[i] = &c
	}
	return rrs
}
