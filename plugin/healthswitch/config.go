package healthswitch

import (
	"crypto/tls"
	"net"
	"time"

	"github.com/coredns/coredns/plugin/pkg/fall"
)

// Policies choose which up clusters answer a name.
const (
	policyAll      = "all"
	policyFailover = "failover"
	policyWeighted = "weighted"
)

// Detection modes: which signals can take a cluster down.
const (
	detectSidecar = "sidecar"
	detectProbe   = "probe"
	detectBoth    = "both"
)

// What to answer when no cluster of a name is up.
const (
	allDownServeAll = "serve_all"
	allDownServfail = "servfail"
	allDownNodata   = "nodata"
)

// config is everything parsed from one healthswitch block. It is never
// changed after setup; a reload builds a new one.
type config struct {
	zones    []string // normalized, lower case, fully qualified
	block    string   // the server block's identity across reloads (lifecycle.go)
	clusters []*clusterConfig
	apps     []app
	// store is `state` or `store etcd` (persist.go); nil: nothing outlives the process.
	store *storeConfig

	level // the block-wide level: every app's, unless its own block overrides it

	listen      string
	tls         *tls.Config // push API over TLS when set
	adminKeys   [][]byte    // the first signs; all verify (key rollover)
	interval    time.Duration
	watch       bool // hold a connection to each probe target; its close runs the probe at once
	timeout     time.Duration
	fall        int
	rise        int
	stale       time.Duration
	skew        time.Duration
	detect      string
	unknownUp   bool
	readyWait   time.Duration
	holddown    time.Duration
	peers       []string
	nameservers []nameserver // NS targets; default ns1.<zone> of each zone, without address
	hostmaster  string       // SOA mbox; default hostmaster.<zone>
	soa         soaTimers
	soaTTL      int64  // TTL of the SOA record; -1: the same as ttl
	nsTTL       uint32 // TTL of the NS records and of the nameservers' addresses

	fallthru fall.F // fallthrough zones

	api apiConfig // push API access rule and limits (access.go)
	// The shortest and longest slow_start of any level, 0 when none ramps:
	// the ramp ticker's period and how long a recovered cluster ramps.
	minSlowStart, maxSlowStart time.Duration
}

// level is an availability level: how one name is answered. The block-wide
// one is every app's default; an app block overrides any of it.
type level struct {
	policy    string
	allDown   string
	ttl       uint32
	slowStart time.Duration
}

// levelField marks a field of a level that an app block sets.
type levelField uint8

const (
	setPolicy levelField = 1 << iota
	setAllDown
	setTTL
	setSlowStart
)

type clusterConfig struct {
	name     string
	v4, v6   []net.IP
	probes   []probeURL
	key      []byte   // signs notifications; nil: this cluster cannot push reports
	keys     [][]byte // verify reports: the current key and any being rolled over
	priority int
	weight   int
	notify   []string
	onDown   *hook
	onUp     *hook
}

// nameserver is one `ns` name and the addresses it is answered with (and
// given as glue): only names inside the block's zones take addresses.
type nameserver struct {
	name   string // lower case, fully qualified
	v4, v6 []net.IP
	line   int
}

// soaTimers are the SOA's REFRESH, RETRY, EXPIRE and MINIMUM, in seconds.
type soaTimers struct{ refresh, retry, expire, minimum uint32 }

// app is one owner name, the clusters that serve it and how.
type app struct {
	name     string // lower case, fully qualified
	zone     string
	clusters []string
	line     int
	level    *level     // the block-wide level (shared) unless the app has a block; set by finish
	set      levelField // the fields of level the app's block sets
}

// resolve fills in the app's effective level once the whole block is read:
// the block-wide one, or its own with the unset fields taken from it.
func (a *app) resolve(def *level) {
	if a.set == 0 {
		a.level = def
		return
	}
	own := a.level
	if a.set&setPolicy == 0 {
		own.policy = def.policy
	}
	if a.set&setAllDown == 0 {
		own.allDown = def.allDown
	}
	if a.set&setTTL == 0 {
		own.ttl = def.ttl
	}
	if a.set&setSlowStart == 0 {
		own.slowStart = def.slowStart
	}
}

// Defaults, as documented in README.md.
const (
	defaultTTL       = 5
	defaultListen    = "127.0.0.1:8053"
	defaultInterval  = 100 * time.Millisecond
	defaultTimeout   = 80 * time.Millisecond
	defaultFall      = 2
	defaultRise      = 2
	defaultStale     = 500 * time.Millisecond
	defaultReadyWait = 5 * time.Second
	defaultPriority  = 1
	defaultWeight    = 100
	maxTTL           = 86400
	defaultNSTTL     = 3600
)

// defaultSOA: values Zonemaster accepts (refresh ≥ 4h, retry ≥ 1h and below
// refresh, expire ≥ 1 week per RFC 1912, minimum 300 s to 1 day). There are
// no secondaries (zone transfers are refused), so refresh, retry and expire
// only matter to checkers. Negative answers are cached for the smaller of the
// SOA's TTL (soa_ttl, default ttl) and minimum (RFC 2308), so by default a
// NODATA lives as long as an answer does.
var defaultSOA = soaTimers{refresh: 14400, retry: 3600, expire: 1209600, minimum: 300}

func newConfig() *config {
	return &config{
		level:     level{policy: policyAll, ttl: defaultTTL, allDown: allDownServeAll},
		listen:    defaultListen,
		interval:  defaultInterval,
		timeout:   defaultTimeout,
		fall:      defaultFall,
		rise:      defaultRise,
		stale:     defaultStale,
		skew:      30 * time.Second,
		detect:    detectBoth,
		unknownUp: true,
		readyWait: defaultReadyWait,
		soa:       defaultSOA,
		soaTTL:    -1,
		nsTTL:     defaultNSTTL,
	}
}

func (c *config) cluster(name string) *clusterConfig {
	for _, cl := range c.clusters {
		if cl.name == name {
			return cl
		}
	}
	return nil
}
