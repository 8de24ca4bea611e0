package healthswitch

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// parseNS reads `ns NAME [ADDRESS...]`. The older form with several names
// on one line (`ns ns1.svc1.net ns2.svc1.net`) still parses: an address
// belongs to the name before it.
func parseNS(c *caddy.Controller, cfg *config) error {
	args := c.RemainingArgs()
	if len(args) == 0 {
		return c.ArgErr()
	}
	var cur *nameserver
	for _, a := range args {
		if ip := net.ParseIP(a); ip != nil {
			if cur == nil {
				return c.Errf("ns: the name comes first, then its addresses: ns NAME ADDRESS...")
			}
			if err := cur.addAddress(ip); err != nil {
				return c.Errf("ns %s: %v", cur.name, err)
			}
			continue
		}
		if _, ok := dns.IsDomainName(a); !ok {
			return c.Errf("ns: %q is neither a domain name nor an IP address", a)
		}
		name := dns.Fqdn(strings.ToLower(a))
		for _, ns := range cfg.nameservers {
			if ns.name == name {
				return c.Errf("ns %s is listed twice (line %d)", name, ns.line)
			}
		}
		cfg.nameservers = append(cfg.nameservers, nameserver{name: name, line: c.Line()})
		cur = &cfg.nameservers[len(cfg.nameservers)-1]
	}
	for _, ns := range cfg.nameservers {
		if ns.hasAddress() && plugin.Zones(cfg.zones).Matches(ns.name) == "" {
			return c.Errf("ns %s is outside this server block's zones %v: only names inside them take addresses", ns.name, cfg.zones)
		}
	}
	return nil
}

func (ns *nameserver) addAddress(ip net.IP) error {
	for _, have := range append(ns.v4, ns.v6...) {
		if have.Equal(ip) {
			return fmt.Errorf("address %s is listed twice", ip)
		}
	}
	if v4 := ip.To4(); v4 != nil {
		ns.v4 = append(ns.v4, v4)
	} else {
		ns.v6 = append(ns.v6, ip)
	}
	return nil
}

func (ns *nameserver) hasAddress() bool { return len(ns.v4)+len(ns.v6) > 0 }

// parseSOA reads `soa REFRESH RETRY EXPIRE MINIMUM`, each in seconds or as a
// duration (4h, 2w).
func parseSOA(c *caddy.Controller, cfg *config) error {
	args := c.RemainingArgs()
	if len(args) != 4 {
		return c.ArgErr()
	}
	var v [4]uint32
	for i, a := range args {
		n, err := seconds(a)
		if err != nil {
			return c.Errf("soa: %v", err)
		}
		v[i] = n
	}
	t := soaTimers{refresh: v[0], retry: v[1], expire: v[2], minimum: v[3]}
	switch {
	case t.refresh == 0 || t.retry == 0 || t.expire == 0:
		return c.Errf("soa: refresh, retry and expire must be greater than 0")
	case t.retry >= t.refresh:
		return c.Errf("soa: retry %d must be less than refresh %d", t.retry, t.refresh)
	case t.expire < t.refresh:
		return c.Errf("soa: expire %d must be at least refresh %d", t.expire, t.refresh)
	case t.minimum > maxTTL:
		return c.Errf("soa: minimum %d is out of range [0, %d]", t.minimum, maxTTL)
	}
	cfg.soa = t
	return nil
}

// seconds reads a whole number of seconds, days (2d) or weeks (2w), or a Go
// duration (4h, 30m).
func seconds(s string) (uint32, error) {
	if s == "" {
		return 0, errors.New(`"" is not a whole number of seconds or a duration like 4h or 2w`)
	}
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		return uint32(n), nil
	}
	unit := map[string]uint64{"d": 86400, "w": 7 * 86400}[strings.ToLower(s[len(s)-1:])]
	if n, err := strconv.ParseUint(s[:len(s)-1], 10, 31); err == nil && unit > 0 && n*unit <= math.MaxInt32 {
		return uint32(n * unit), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d.Seconds() > math.MaxInt32 || d%time.Second != 0 {
		return 0, fmt.Errorf("%q is not a whole number of seconds or a duration like 4h or 2w", s)
	}
	return uint32(d / time.Second), nil
}

// finishZone applies the checks of the zone's own records that need the
// whole block, and shares one cluster list among the apps that name the
// same clusters: with thousands of apps on the same clusters, each app's own
// copy of the list would be most of the memory the configuration holds.
func finishZone(c *caddy.Controller, cfg *config) error {
	lists := map[string][]string{}
	for i, a := range cfg.apps {
		key := strings.Join(a.clusters, " ")
		if l, ok := lists[key]; ok {
			cfg.apps[i].clusters = l
		} else {
			lists[key] = a.clusters
		}
	}
	return checkNameservers(c, cfg)
}

// checkNameservers needs the whole block: an in-zone nameserver must not be
// an app, and one without an address is worth a warning, since resolvers
// that look it up find nothing (BIND refuses to load such a zone).
func checkNameservers(c *caddy.Controller, cfg *config) error {
	for _, ns := range cfg.nameservers {
		if plugin.Zones(cfg.zones).Matches(ns.name) == "" {
			continue
		}
		for _, a := range cfg.apps {
			if a.name == ns.name {
				return fmt.Errorf("%s:%d - Error during parsing: ns %s is also an app name (line %d): give the nameserver a name of its own", c.File(), ns.line, ns.name, a.line)
			}
		}
		if !ns.hasAddress() {
			log.Warningf("ns %s is inside the zone but has no address: give it one with `ns %s ADDRESS...` (line %d)", ns.name, strings.TrimSuffix(ns.name, "."), ns.line)
		}
	}
	if len(cfg.nameservers) == 0 {
		for _, z := range cfg.zones {
			log.Warningf("zone %s: no `ns` given, so its NS is %s, which has no address: name this server with `ns NAME ADDRESS...`", z, dnsJoin("ns1", z))
		}
	}
	return nil
}

func (ns *nameserver) addresses(qtype uint16) []net.IP {
	if qtype == dns.TypeAAAA {
		return ns.v6
	}
	return ns.v4
}
