package healthswitch

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/store"
	"github.com/healthswitch/healthswitch/report"
)

const pluginName = "healthswitch"

func init() { plugin.Register(pluginName, setup) }

func setup(c *caddy.Controller) error {
	cfg, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	h := newHealthSwitch(cfg)

	c.OnStartup(h.start)
	c.OnStartup(func() error { releaseParseMemory(h.gen); return nil })
	c.OnShutdown(h.stop)
	c.OnRestart(h.onRestart)
	c.OnRestartFailed(h.onRestartFailed)

	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}

// parse reads one healthswitch block. It only reads and validates: nothing
// starts here, so a bad reload leaves the running instance untouched.
func parse(c *caddy.Controller) (*config, error) {
	cfg := newConfig()
	seen := false
	for c.Next() {
		if seen {
			return nil, c.Err("healthswitch may appear only once per server block")
		}
		seen = true
		cfg.zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
		cfg.block = blockIdentity(c)
		for c.NextBlock() {
			if err := parseProperty(c, cfg); err != nil {
				return nil, err
			}
		}
	}
	if err := finish(c, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

func parseProperty(c *caddy.Controller, cfg *config) error {
	var err error
	switch prop := c.Val(); prop {
	case "cluster":
		return parseCluster(c, cfg)
	case "app":
		return parseApp(c, cfg)
	case "policy", "all_down", "ttl", "slow_start":
		_, err = parseLevelProperty(c, &cfg.level)
	case "detect":
		cfg.detect, err = oneOf(c, detectSidecar, detectProbe, detectBoth)
	case "unknown":
		var v string
		v, err = oneOf(c, "up", "down")
		cfg.unknownUp = v == "up"
	case "fall":
		cfg.fall, err = intArg(c, 1, 100)
	case "rise":
		cfg.rise, err = intArg(c, 1, 100)
	case "interval":
		cfg.interval, err = durationArg(c, true)
	case "watch":
		var v string
		v, err = oneOf(c, "on", "off")
		cfg.watch = v == "on"
	case "timeout":
		cfg.timeout, err = durationArg(c, true)
	case "stale":
		cfg.stale, err = durationArg(c, true)
	case "skew":
		cfg.skew, err = durationArg(c, true)
	case "ready_timeout":
		cfg.readyWait, err = durationArg(c, false)
	case "holddown":
		cfg.holddown, err = durationArg(c, false)
	case "listen":
		cfg.listen, err = listenArg(c)
	case "tls":
		args := c.RemainingArgs()
		if len(args) != 2 {
			return c.ArgErr()
		}
		cert, err := tls.LoadX509KeyPair(args[0], args[1])
		if err != nil {
			return c.Errf("tls: %v", err)
		}
		cfg.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case "admin_key_file":
		cfg.adminKeys, err = keyArgs(c)
	case "read_key_file", "status_public", "limits":
		return parseAPIAccess(c, cfg)
	case "peers":
		var urls []*url.URL
		urls, err = urlArgs(c, "http", "https")
		for _, u := range urls {
			cfg.peers = append(cfg.peers, strings.TrimSuffix(u.String(), "/"))
		}
	case "ns":
		return parseNS(c, cfg)
	case "soa":
		return parseSOA(c, cfg)
	case "soa_ttl":
		var n int
		n, err = intArg(c, 0, maxTTL)
		cfg.soaTTL = int64(n)
	case "ns_ttl":
		var n int
		n, err = intArg(c, 0, maxTTL)
		cfg.nsTTL = uint32(n)
	case "hostmaster":
		args := c.RemainingArgs()
		if len(args) != 1 {
			return c.ArgErr()
		}
		if _, ok := dns.IsDomainName(args[0]); !ok {
			return c.Errf("hostmaster: %q is not a domain name (write the mailbox as hostmaster.example.net)", args[0])
		}
		cfg.hostmaster = dns.Fqdn(strings.ToLower(args[0]))
	case "fallthrough":
		cfg.fallthru.SetZonesFromArgs(c.RemainingArgs())
	case "state":
		return parseState(c, cfg)
	case "store":
		return parseStore(c, cfg)
	default:
		return c.Errf("unknown property %q", prop)
	}
	return err
}

var clusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// parseCluster reads `cluster NAME IP... [{ ... }]`.
func parseCluster(c *caddy.Controller, cfg *config) error {
	args := c.RemainingArgs()
	if len(args) < 2 {
		return c.Errf("cluster needs a name and at least one IP address, e.g. cluster east 192.0.2.10")
	}
	name := args[0]
	if !clusterName.MatchString(name) {
		return c.Errf("cluster name %q: use lower-case letters, digits, '-' and '_'", name)
	}
	if cfg.cluster(name) != nil {
		return c.Errf("cluster %q is defined twice", name)
	}
	cl := &clusterConfig{name: name, priority: defaultPriority, weight: defaultWeight}
	seenIP := map[string]bool{}
	for _, a := range args[1:] {
		ip := net.ParseIP(a)
		if ip == nil {
			return c.Errf("cluster %s: %q is not an IP address", name, a)
		}
		if seenIP[ip.String()] {
			return c.Errf("cluster %s: address %s is listed twice", name, a)
		}
		seenIP[ip.String()] = true
		if v4 := ip.To4(); v4 != nil {
			cl.v4 = append(cl.v4, v4)
		} else {
			cl.v6 = append(cl.v6, ip)
		}
	}
	cfg.clusters = append(cfg.clusters, cl)

	// The block is optional, so look for its brace on this line before
	// entering it: NextBlock would otherwise swallow the next property.
	if !c.NextArg() {
		return nil
	}
	if c.Val() != "{" {
		return c.Errf("cluster %s: unexpected %q", name, c.Val())
	}
	for c.Next() {
		if c.Val() == "}" {
			return nil
		}
		if err := parseClusterProperty(c, cl); err != nil {
			return err
		}
	}
	return c.EOFErr()
}

func parseClusterProperty(c *caddy.Controller, cl *clusterConfig) error {
	var err error
	switch prop := c.Val(); prop {
	case "probe":
		var urls []*url.URL
		urls, err = urlArgs(c, "http", "https", "tcp")
		for _, u := range urls {
			cl.probes = append(cl.probes, probeURL{raw: u.String(), scheme: u.Scheme, host: u.Host})
		}
	case "key_file":
		cl.keys, err = keyArgs(c)
		if err == nil {
			cl.key = cl.keys[0]
		}
	case "priority":
		cl.priority, err = intArg(c, 0, 1000)
	case "weight":
		cl.weight, err = intArg(c, 0, 1_000_000)
	case "notify":
		var urls []*url.URL
		urls, err = urlArgs(c, "http", "https")
		for _, u := range urls {
			cl.notify = append(cl.notify, u.String())
		}
	case "on_down":
		cl.onDown, err = commandArg(c)
	case "on_up":
		cl.onUp, err = commandArg(c)
	default:
		return c.Errf("cluster %s: unknown property %q", cl.name, prop)
	}
	return err
}

// parseApp reads `app NAME CLUSTER... [{ ... }]`. The clusters are checked,
// and the level the block leaves unset is taken from the block-wide one,
// once the whole block is read, so the order of lines does not matter.
func parseApp(c *caddy.Controller, cfg *config) error {
	args := c.RemainingArgs()
	if len(args) < 2 {
		return c.Errf("app needs a name and at least one cluster, e.g. app svc1.net east west")
	}
	if _, ok := dns.IsDomainName(args[0]); !ok {
		return c.Errf("app: %q is not a domain name", args[0])
	}
	name := dns.Fqdn(strings.ToLower(args[0]))
	for _, a := range cfg.apps {
		if a.name == name {
			return c.Errf("app %s is defined twice (line %d)", name, a.line)
		}
	}
	zone := plugin.Zones(cfg.zones).Matches(name)
	if zone == "" {
		return c.Errf("app %s is outside this server block's zones %v", name, cfg.zones)
	}
	ap := app{name: name, zone: zone, clusters: args[1:], line: c.Line()}
	// As for cluster: look for the optional brace on this line only.
	if c.NextArg() {
		if c.Val() != "{" {
			return c.Errf("app %s: unexpected %q", name, c.Val())
		}
		if err := parseAppBlock(c, &ap); err != nil {
			return err
		}
	}
	cfg.apps = append(cfg.apps, ap)
	return nil
}

// parseAppBlock reads an app's own level, up to the closing brace.
func parseAppBlock(c *caddy.Controller, ap *app) error {
	ap.level = &level{}
	for c.Next() {
		if c.Val() == "}" {
			return nil
		}
		prop := c.Val()
		f, err := parseLevelProperty(c, ap.level)
		if err != nil {
			return err
		}
		if f == 0 {
			return c.Errf("app %s: unknown property %q (an app block takes policy, all_down, ttl, slow_start)", ap.name, prop)
		}
		if ap.set&f != 0 {
			return c.Errf("app %s: %s is set twice", ap.name, prop)
		}
		ap.set |= f
	}
	return c.EOFErr()
}

// parseLevelProperty reads one property of an availability level, the same
// way block-wide and in an app block. It returns which field it set, 0 when
// the property is no level's.
func parseLevelProperty(c *caddy.Controller, l *level) (levelField, error) {
	var err error
	switch c.Val() {
	case "policy":
		l.policy, err = oneOf(c, policyAll, policyFailover, policyWeighted)
		return setPolicy, err
	case "all_down":
		l.allDown, err = oneOf(c, allDownServeAll, allDownServfail, allDownNodata)
		return setAllDown, err
	case "ttl":
		var n int
		n, err = intArg(c, 0, maxTTL)
		l.ttl = uint32(n)
		return setTTL, err
	case "slow_start":
		l.slowStart, err = durationArg(c, false)
		return setSlowStart, err
	}
	return 0, nil
}

// finish applies the checks that need the whole block.
func finish(c *caddy.Controller, cfg *config) error {
	if len(cfg.clusters) == 0 {
		return c.Err("at least one cluster is required, e.g. cluster east 192.0.2.10")
	}
	if cfg.timeout >= cfg.interval {
		return c.Errf("timeout %s must be less than interval %s", cfg.timeout, cfg.interval)
	}
	for _, a := range cfg.apps {
		for _, name := range a.clusters {
			if cfg.cluster(name) == nil {
				return fmt.Errorf("%s:%d - Error during parsing: app %s names cluster %q, which is not defined", c.File(), a.line, a.name, name)
			}
		}
	}
	if len(cfg.apps) == 0 {
		// By default every cluster serves every zone apex of the block.
		names := make([]string, len(cfg.clusters))
		for i, cl := range cfg.clusters {
			names[i] = cl.name
		}
		for _, z := range cfg.zones {
			if z == "." {
				return c.Err("the root zone has no default app name: list the names with app NAME CLUSTER...")
			}
			cfg.apps = append(cfg.apps, app{name: z, zone: z, clusters: names})
		}
	}
	for i := range cfg.apps {
		cfg.apps[i].resolve(&cfg.level)
	}
	if err := finishLevels(c, cfg); err != nil {
		return err
	}
	if err := finishZone(c, cfg); err != nil {
		return err
	}
	for _, cl := range cfg.clusters {
		if cfg.detect == detectProbe && len(cl.probes) == 0 {
			return c.Errf("detect probe: cluster %s has no probe", cl.name)
		}
		if len(cl.notify) > 0 && cl.key == nil {
			return c.Errf("cluster %s: notify needs key_file, to sign what it sends", cl.name)
		}
		if cfg.detect == detectSidecar && cl.key == nil {
			return c.Errf("detect sidecar: cluster %s has no key_file, so its sidecar cannot report", cl.name)
		}
	}
	return nil
}

// finishLevels checks the levels, block-wide and each app's own, and notes
// the slow_start range the engine ramps over.
func finishLevels(c *caddy.Controller, cfg *config) error {
	if cfg.policy == policyWeighted && !anyWeight(cfg, nil) {
		return c.Err("policy weighted needs at least one cluster with a weight above 0")
	}
	cfg.minSlowStart, cfg.maxSlowStart = cfg.slowStart, cfg.slowStart
	for _, a := range cfg.apps {
		if a.set == 0 {
			continue
		}
		if a.set&setPolicy != 0 && a.level.policy == policyWeighted && !anyWeight(cfg, a.clusters) {
			return fmt.Errorf("%s:%d - Error during parsing: app %s: policy weighted needs at least one of its clusters with a weight above 0", c.File(), a.line, a.name)
		}
		if d := a.level.slowStart; d > 0 {
			cfg.maxSlowStart = max(cfg.maxSlowStart, d)
			if cfg.minSlowStart == 0 || d < cfg.minSlowStart {
				cfg.minSlowStart = d
			}
		}
	}
	return nil
}

// parseAPIAccess reads the push API's access and limit sub-directives
// (access.go, limits.go).
func parseAPIAccess(c *caddy.Controller, cfg *config) error {
	var err error
	switch c.Val() {
	case "read_key_file":
		cfg.api.readKeys, err = keyArgs(c)
	case "status_public":
		if c.NextArg() {
			return c.ArgErr()
		}
		cfg.api.statusPublic = true
	case "limits":
		// limits MAX_CONNECTIONS PER_SOURCE [PER_SOURCE_REQUESTS]
		args := c.RemainingArgs()
		if len(args) < 2 || len(args) > 3 {
			return c.Errf("limits needs MAX_CONNECTIONS PER_SOURCE [PER_SOURCE_REQUESTS], e.g. limits %d %d %d", defaultMaxConns, defaultPerSource, defaultPerSourceReq)
		}
		var n [3]int
		for i, a := range args {
			if n[i], err = strconv.Atoi(a); err != nil || n[i] < 1 || n[i] > 1_000_000 {
				return c.Errf("limits: %q is not a number from 1 to 1000000", a)
			}
		}
		if n[1] > n[0] {
			return c.Errf("limits: PER_SOURCE %d is above MAX_CONNECTIONS %d", n[1], n[0])
		}
		cfg.api.maxConns, cfg.api.perSource, cfg.api.perSourceReq = n[0], n[1], n[2]
	}
	return err
}

// anyWeight reports whether one of the clusters named (every cluster when
// names is nil) has a weight above 0.
func anyWeight(cfg *config, names []string) bool {
	for _, cl := range cfg.clusters {
		if cl.weight > 0 && (names == nil || slices.Contains(names, cl.name)) {
			return true
		}
	}
	return false
}

func oneOf(c *caddy.Controller, choices ...string) (string, error) {
	prop := c.Val()
	args := c.RemainingArgs()
	if len(args) != 1 {
		return "", c.ArgErr()
	}
	for _, ch := range choices {
		if args[0] == ch {
			return ch, nil
		}
	}
	return "", c.Errf("%s: %q is not one of %s", prop, args[0], strings.Join(choices, ", "))
}

func intArg(c *caddy.Controller, lo, hi int) (int, error) {
	prop := c.Val()
	args := c.RemainingArgs()
	if len(args) != 1 {
		return 0, c.ArgErr()
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return 0, c.Errf("%s: %q is not a whole number", prop, args[0])
	}
	if n < lo || n > hi {
		return 0, c.Errf("%s: %d is out of range [%d, %d]", prop, n, lo, hi)
	}
	return n, nil
}

func durationArg(c *caddy.Controller, positive bool) (time.Duration, error) {
	prop := c.Val()
	args := c.RemainingArgs()
	if len(args) != 1 {
		return 0, c.ArgErr()
	}
	d, err := time.ParseDuration(args[0])
	if err != nil {
		return 0, c.Errf("%s: %q is not a duration (e.g. 100ms, 2s)", prop, args[0])
	}
	if d < 0 || (positive && d == 0) {
		return 0, c.Errf("%s: %s must be greater than 0", prop, args[0])
	}
	return d, nil
}

func listenArg(c *caddy.Controller) (string, error) {
	args := c.RemainingArgs()
	if len(args) != 1 {
		return "", c.ArgErr()
	}
	host, port, err := net.SplitHostPort(args[0])
	if err != nil {
		return "", c.Errf("listen: %q is not host:port", args[0])
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", c.Errf("listen: port %q is not a port number", port)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return "", c.Errf("listen: host %q is not an IP address", host)
	}
	return args[0], nil
}

// keyArgs reads one or more key files: the first is the current key, the
// others are accepted too while a rollover is under way.
func keyArgs(c *caddy.Controller) ([][]byte, error) {
	prop := c.Val()
	paths := c.RemainingArgs()
	if len(paths) == 0 {
		return nil, c.ArgErr()
	}
	var keys [][]byte
	for _, p := range paths {
		key, err := report.LoadKey(p)
		if err != nil {
			return nil, c.Errf("%s: %v", prop, err)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// urlArgs parses the rest of the line as URLs, once: what is kept is the
// parsed URL.
func urlArgs(c *caddy.Controller, schemes ...string) ([]*url.URL, error) {
	prop := c.Val()
	args := c.RemainingArgs()
	if len(args) == 0 {
		return nil, c.ArgErr()
	}
	var urls []*url.URL
	for _, a := range args {
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			return nil, c.Errf("%s: %q is not a URL like %s://host:port", prop, a, schemes[0])
		}
		ok := false
		for _, s := range schemes {
			ok = ok || u.Scheme == s
		}
		if !ok {
			return nil, c.Errf("%s: %q: scheme must be one of %s", prop, a, strings.Join(schemes, ", "))
		}
		if u.Scheme == "tcp" && u.Port() == "" {
			return nil, c.Errf("%s: %q needs a port", prop, a)
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// commandArg reads the rest of the line: an http(s) URL to POST to, or an
// argv to run, kept as the words it was written as.
func commandArg(c *caddy.Controller) (*hook, error) {
	args := c.RemainingArgs()
	if len(args) == 0 {
		return nil, c.ArgErr()
	}
	if len(args) == 1 && (strings.HasPrefix(args[0], "http://") || strings.HasPrefix(args[0], "https://")) {
		return &hook{url: args[0]}, nil
	}
	return &hook{argv: args}, nil
}

// parseState reads `state FILE`: what one replica must not lose, in a file.
func parseState(c *caddy.Controller, cfg *config) error {
	args := c.RemainingArgs()
	if len(args) != 1 {
		return c.Errf("state needs one file, e.g. state /var/lib/healthswitch/state.json")
	}
	if cfg.store != nil {
		return c.Errf("state: the store is already set on line %d (state and store etcd exclude each other)", cfg.store.line)
	}
	path, err := filepath.Abs(args[0])
	if err != nil {
		return c.Errf("state: %v", err)
	}
	cfg.store = &storeConfig{kind: storeFile, path: path, line: c.Line()}
	return nil
}

// parseStore reads `store etcd ENDPOINT... [{ ... }]`: state shared by
// every replica through etcd. Files are read here, so a bad one fails the
// load with its line, not the first write.
func parseStore(c *caddy.Controller, cfg *config) error {
	line := c.Line()
	args := c.RemainingArgs()
	if len(args) < 2 || args[0] != "etcd" {
		return c.Errf("store needs a kind and endpoints, e.g. store etcd https://etcd-0:2379")
	}
	if cfg.store != nil {
		return c.Errf("store: the store is already set on line %d (state and store etcd exclude each other)", cfg.store.line)
	}
	sc := &storeConfig{kind: storeEtcd, line: line, etcd: store.EtcdOptions{OpTimeout: defaultStoreTimeout}}
	for _, a := range args[1:] {
		u, err := url.Parse(a)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return c.Errf("store etcd: %q is not an endpoint like https://etcd-0:2379", a)
		}
		sc.etcd.Endpoints = append(sc.etcd.Endpoints, a)
	}
	// The block is optional: look for its brace on this line (as cluster does).
	if c.NextArg() {
		if c.Val() != "{" {
			return c.Errf("store etcd: unexpected %q", c.Val())
		}
		closed := false
		for !closed && c.Next() {
			if closed = c.Val() == "}"; !closed {
				if err := parseStoreProperty(c, sc); err != nil {
					return err
				}
			}
		}
		if !closed {
			return c.EOFErr()
		}
	}
	if sc.etcd.Replica == "" {
		sc.etcd.Replica, _ = os.Hostname()
	}
	if sc.etcd.Prefix == "" {
		sc.etcd.Prefix = "/healthswitch"
	}
	cfg.store = sc
	return nil
}

func parseStoreProperty(c *caddy.Controller, sc *storeConfig) error {
	o := &sc.etcd
	prop := c.Val()
	args := c.RemainingArgs()
	one := func() (string, error) {
		if len(args) != 1 {
			return "", c.Errf("store etcd: %s needs one value", prop)
		}
		return args[0], nil
	}
	var err error
	switch prop {
	case "prefix":
		o.Prefix, err = one()
		if err == nil && (!strings.HasPrefix(o.Prefix, "/") || strings.Trim(o.Prefix, "/") == "") {
			return c.Errf("store etcd: prefix %q must start with / and name something", o.Prefix)
		}
	case "tls":
		if len(args) != 3 {
			return c.Errf("store etcd: tls needs CERT KEY CA")
		}
		if _, err := tls.LoadX509KeyPair(args[0], args[1]); err != nil {
			return c.Errf("store etcd: tls: %v", err)
		}
		pem, err := os.ReadFile(args[2])
		if err != nil || !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return c.Errf("store etcd: tls: no CA certificate in %s", args[2])
		}
		o.CertFile, o.KeyFile, o.CAFile = args[0], args[1], args[2]
	case "username":
		o.Username, err = one()
	case "password_file":
		o.PasswordFile, err = one()
		if err == nil {
			if _, rerr := os.ReadFile(o.PasswordFile); rerr != nil {
				return c.Errf("store etcd: password_file: %v", rerr)
			}
		}
	case "replica":
		o.Replica, err = one()
		if err == nil && (strings.Contains(o.Replica, "/") || o.Replica == "") {
			return c.Errf("store etcd: replica %q may not contain /", o.Replica)
		}
	case "timeout", "presence_ttl":
		var v string
		var d time.Duration
		if v, err = one(); err == nil {
			if d, err = time.ParseDuration(v); err != nil || d <= 0 {
				return c.Errf("store etcd: %s %q is not a positive duration", prop, v)
			}
		}
		if prop == "timeout" {
			o.OpTimeout = d
		} else if d < 2*time.Second {
			return c.Errf("store etcd: presence_ttl %s is under 2s", d)
		} else {
			o.PresenceTTL = d
		}
	default:
		return c.Errf("store etcd: unknown property %q", prop)
	}
	return err
}
