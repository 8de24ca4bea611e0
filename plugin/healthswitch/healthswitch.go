// Package healthswitch is a CoreDNS plugin that answers an application's
// names with the addresses of every healthy cluster, and stops handing out a
// cluster's addresses as soon as it is seen to fail.
package healthswitch

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"

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
	allDownAnswers prometheus.Counter
	gen            uint64 // the Corefile load this instance belongs to
	listener       *sharedListener
	tlsConfig      *tls.Config
	once           sync.Once
}

func newHealthSwitch(cfg *config) *HealthSwitch {
	h := &HealthSwitch{cfg: cfg, zones: plugin.Zones(cfg.zones), engine: newEngine(cfg), gen: currentGen(), tlsConfig: cfg.tls}
	h.api = h.routes()
	h.allDownAnswers = allDownCount.WithLabelValues(cfg.allDown)
	return h
}

// Name implements plugin.Handler.
func (h *HealthSwitch) Name() string { return pluginName }

// ServeDNS implements plugin.Handler. It reads one immutable snapshot and
// never waits on health work.
func (h *HealthSwitch) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname := state.Name()
	zone := h.zones.Matches(qname)
	if zone == "" {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	snap := h.snap.Load()
	e := snap.names[qname]
	if e == nil {
		if h.cfg.fallthru.Through(qname) {
			return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
		}
		return h.negative(w, r, snap.zones[zone], dns.RcodeNameError)
	}

	var answer []dns.RR
	owner := state.QName()
	switch state.QType() {
	case dns.TypeA, dns.TypeAAAA:
		if set := snap.answers(e, state.QType()); set != nil {
			ips, rcode := h.addresses(set)
			if rcode != dns.RcodeSuccess {
				return rcode, nil
			}
			answer = addressRecords(owner, state.QType(), h.cfg.ttl, ips)
		}
	case dns.TypeSOA:
		if e.apex {
			answer = soaRecord(snap.zones[zone])
		}
	case dns.TypeNS:
		if e.apex {
			answer = nsRecords(snap.zones[zone], owner)
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
	m.Answer = answer
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// addresses applies the policy, or all_down when no cluster is up. A
// SERVFAIL rcode means: write nothing, let CoreDNS answer.
func (h *HealthSwitch) addresses(s *answerSet) ([]net.IP, int) {
	if !s.allDown {
		return s.pick(), dns.RcodeSuccess
	}
	h.allDownAnswers.Inc()
	switch h.cfg.allDown {
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
