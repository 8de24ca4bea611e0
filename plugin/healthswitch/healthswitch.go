// Package healthswitch is a CoreDNS plugin that answers an application's
// names with the addresses of every healthy cluster, and stops handing out a
// cluster's addresses as soon as it is seen to fail.
package healthswitch

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// HealthSwitch is the plugin handler of one server block.
type HealthSwitch struct {
	Next plugin.Handler

	cfg   *config
	zones plugin.Zones
	*engine

	api            http.Handler
	gate           *apiGate // push API admission (limits.go)
	allDownAnswers map[string]prometheus.Counter
	gen            uint64 // the Corefile load this instance belongs to
	listener       *sharedListener
	tlsConfig      *tls.Config
	once           sync.Once
}

func newHealthSwitch(cfg *config) *HealthSwitch {
	h := &HealthSwitch{cfg: cfg, zones: plugin.Zones(cfg.zones), engine: newEngine(cfg), gen: currentGen(), tlsConfig: cfg.tls}
	h.api = h.routes()
	h.allDownAnswers = map[string]prometheus.Counter{} // by all_down mode, for the modes the names use
	for _, ap := range cfg.apps {
		if h.allDownAnswers[ap.level.allDown] == nil {
			h.allDownAnswers[ap.level.allDown] = allDownCount.WithLabelValues(ap.level.allDown)
		}
	}
	return h
}

// Name implements plugin.Handler.
func (h *HealthSwitch) Name() string { return pluginName }

// ServeDNS implements plugin.Handler. It reads one immutable snapshot and
// never waits on health work.
func (h *HealthSwitch) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if len(r.Question) != 1 {
		// CoreDNS's server answers these FORMERR before any plugin runs
		// (miekg/dns's accept function); said again here for a server
		// built another way, rather than answering the first question only.
		return dns.RcodeFormatError, nil
	}
	state := request.Request{W: w, Req: r}
	qname := state.Name()
	zone := h.zones.Matches(qname)
	if zone == "" {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	if rcode, done := h.notQuery(state, zone); done {
		return rcode, nil
	}
	snap := h.snap.Load()
	e := snap.names[qname]
	if e == nil {
		if h.cfg.fallthru.Through(qname) {
			return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
		}
		return h.negative(w, r, snap.zones[zone], dns.RcodeNameError)
	}

	var answer, extra []dns.RR
	owner := state.QName()
	switch state.QType() {
	case dns.TypeA, dns.TypeAAAA:
		if set := snap.answers(e, state.QType()); set != nil {
			ips, rcode := h.addresses(set)
			if rcode != dns.RcodeSuccess {
				return rcode, nil
			}
			answer = addressRecords(owner, state.QType(), set.level.ttl, ips)
		} else if e.ns != nil {
			answer = addressRecords(owner, state.QType(), h.cfg.nsTTL, e.ns.addresses(state.QType()))
		}
	case dns.TypeSOA:
		if e.apex {
			answer = soaRecord(snap.zones[zone])
		}
	case dns.TypeNS:
		if e.apex {
			answer = nsRecords(snap.zones[zone], owner)
			extra = glueRecords(snap.zones[zone])
		}
	}
	if len(answer) == 0 {
		if h.cfg.fallthru.Through(qname) {
			return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
		}
		return h.negative(w, r, snap.zones[zone], dns.RcodeSuccess)
	}

	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.Answer, m.Extra = answer, extra
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// notQuery answers what is no plain query, as CoreDNS's file plugin does for
// a zone it is the primary of: zone transfers are REFUSED, a NOTIFY is
// dropped (there is no primary to transfer from), and other opcodes, which
// reach plugins only when one asks for them, are not implemented.
func (h *HealthSwitch) notQuery(state request.Request, zone string) (int, bool) {
	switch state.Req.Opcode {
	case dns.OpcodeQuery:
	case dns.OpcodeNotify:
		log.Debugf("Dropping notify from %s for %s: healthswitch zones have no primary", state.IP(), zone)
		return dns.RcodeSuccess, true
	default:
		return dns.RcodeNotImplemented, true
	}
	if t := state.QType(); t == dns.TypeAXFR || t == dns.TypeIXFR {
		return dns.RcodeRefused, true
	}
	return 0, false
}

// addresses applies the policy, or the name's all_down when no cluster is
// up. A SERVFAIL rcode means: write nothing, let CoreDNS answer.
func (h *HealthSwitch) addresses(s *answerSet) ([]net.IP, int) {
	if !s.allDown {
		return s.pick(), dns.RcodeSuccess
	}
	h.allDownAnswers[s.level.allDown].Inc()
	switch s.level.allDown {
	case allDownServfail:
		return nil, dns.RcodeServerFailure
	case allDownNodata:
		return nil, dns.RcodeSuccess
	}
	return rotate(s.fallback), dns.RcodeSuccess
}

// negative writes NXDOMAIN or NODATA with the zone's SOA, so resolvers can
// cache it for the SOA's minimum TTL and no longer.
func (h *HealthSwitch) negative(w dns.ResponseWriter, r *dns.Msg, zr *zoneRecords, rcode int) (int, error) {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	m.Authoritative = true
	m.Ns = soaRecord(zr)
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// releaseParseMemory runs in OnStartup, once every plugin has parsed its
// block: the Corefile's tokens are garbage by then, and with a large
// configuration (10,000 names × 100 clusters is a million tokens) they are
// most of the heap's peak. Go would hand that memory back to the system only
// over minutes; a DNS server's RSS is what its limits are set from, so hand
// it back at once: one garbage collection per Corefile load, however many
// blocks have a healthswitch.
func releaseParseMemory(gen uint64) {
	if releasedGen.Swap(gen+1) != gen+1 {
		debug.FreeOSMemory()
	}
}

var releasedGen atomic.Uint64 // the last load released, plus one (0: none yet)
