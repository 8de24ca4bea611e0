package healthswitch

import (
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// snapshot is everything a query needs, built whenever a cluster changes
// state and never modified after it is published. The name table is built
// once per configuration and shared by every snapshot; a transition only
// rebuilds the answer sets, one per distinct list of serving clusters, so
// its cost does not grow with the number of names.
type snapshot struct {
	epoch uint64
	*nameTable
	sets []setPair // indexed by entry.set
}

// nameTable is the part of the answers that only the configuration changes.
type nameTable struct {
	names  map[string]*entry // every name that exists: apexes, apps and the empty non-terminals between them
	zones  map[string]*zoneRecords
	groups [][]string // the distinct cluster lists of the apps; entry.set indexes them
}

type setPair struct{ a, aaaa *answerSet }

type zoneRecords struct {
	soa *dns.SOA
	ns  []*dns.NS
}

// entry is one existing name.
type entry struct {
	zone string
	apex bool
	set  int // index into snapshot.sets; -1 when the name is no app
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
	serving bool    // up, or unknown and treated as up
	share   float64 // (0,1]: below 1 while slow start ramps it in
}

func newNameTable(cfg *config, serial uint32) *nameTable {
	t := &nameTable{names: map[string]*entry{}, zones: map[string]*zoneRecords{}}
	for _, z := range cfg.zones {
		t.zones[z] = zoneRecordsFor(cfg, z, serial)
		t.names[z] = &entry{zone: z, apex: true, set: -1}
	}
	groupIndex := map[string]int{}
	for _, ap := range cfg.apps {
		key := strings.Join(ap.clusters, " ")
		g, ok := groupIndex[key]
		if !ok {
			g = len(t.groups)
			groupIndex[key] = g
			t.groups = append(t.groups, ap.clusters)
		}
		e := t.names[ap.name]
		if e == nil {
			e = &entry{zone: ap.zone}
			t.names[ap.name] = e
		}
		e.set = g
		// Names between the app and its zone exist too (RFC 8020): they
		// answer NODATA, never NXDOMAIN.
		for n := parentName(ap.name); n != "" && n != ap.zone && dns.IsSubDomain(ap.zone, n); n = parentName(n) {
			if t.names[n] == nil {
				t.names[n] = &entry{zone: ap.zone, set: -1}
			}
		}
	}
	return t
}

func buildSnapshot(cfg *config, epoch uint64, views map[string]clusterView, table *nameTable) *snapshot {
	s := &snapshot{epoch: epoch, nameTable: table, sets: make([]setPair, len(table.groups))}
	for i, clusters := range table.groups {
		s.sets[i].a, s.sets[i].aaaa = answerSets(cfg, clusters, views)
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

func answerSets(cfg *config, clusters []string, views map[string]clusterView) (a, aaaa *answerSet) {
	a, aaaa = &answerSet{}, &answerSet{}
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
	if cfg.policy == policyFailover {
		best := up[0].cfg.priority
		for _, v := range up {
			best = min(best, v.cfg.priority)
		}
		tier := up[:0:0]
		for _, v := range up {
			if v.cfg.priority == best {
				tier = append(tier, v)
			}
		}
		up = tier
	}
	fill(a, cfg.policy, up, func(c *clusterConfig) []net.IP { return c.v4 })
	fill(aaaa, cfg.policy, up, func(c *clusterConfig) []net.IP { return c.v6 })
	return a, aaaa
}

func fill(s *answerSet, policy string, up []clusterView, ips func(*clusterConfig) []net.IP) {
	s.weighted = policy == policyWeighted
	whole := true
	for _, v := range up {
		addrs := ips(v.cfg)
		if len(addrs) == 0 {
			continue
		}
		w := v.share
		if s.weighted {
			w *= float64(v.cfg.weight)
			if w == 0 {
				continue
			}
		}
		whole = whole && v.share >= 1
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

func zoneRecordsFor(cfg *config, zone string, serial uint32) *zoneRecords {
	ns := cfg.nameservers
	if len(ns) == 0 {
		ns = []string{dnsJoin("ns1", zone)}
	}
	mbox := cfg.hostmaster
	if mbox == "" {
		mbox = dnsJoin("hostmaster", zone)
	}
	zr := &zoneRecords{soa: &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: cfg.ttl},
		Ns:      ns[0],
		Mbox:    mbox,
		Serial:  serial,
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  cfg.ttl,
	}}
	for _, n := range ns {
		zr.ns = append(zr.ns, &dns.NS{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: cfg.ttl}, Ns: n})
	}
	return zr
}

func dnsJoin(label, zone string) string {
	if zone == "." {
		return label + "."
	}
	return label + "." + zone
}

func serialNow() uint32 { return uint32(time.Now().Unix()) }

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

func nsRecords(zr *zoneRecords, owner string) []dns.RR {
	rrs := make([]dns.RR, len(zr.ns))
	for i, ns := range zr.ns {
		c := *ns
		c.Hdr.Name = owner
		rrs[i] = &c
	}
	return rrs
}
