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

	policy      string
	ttl         uint32
	listen      string
	tls         *tls.Config // push API over TLS when set
	adminKeys   [][]byte    // the first signs; all verify (key rollover)
	interval    time.Duration
	timeout     time.Duration
	fall        int
	rise        int
	stale       time.Duration
	skew        time.Duration
	detect      string
	allDown     string
	unknownUp   bool
	readyWait   time.Duration
	holddown    time.Duration
	slowStart   time.Duration
	peers       []string
	nameservers []string // NS targets; default ns1.<zone>
	hostmaster  string   // SOA mbox; default hostmaster.<zone>

	fallthru fall.F // fallthrough zones
}

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

// app is one owner name and the clusters that serve it.
type app struct {
	name     string // lower case, fully qualified
	zone     string
	clusters []string
	line     int
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
)

func newConfig() *config {
	return &config{
		policy:    policyAll,
		ttl:       defaultTTL,
		listen:    defaultListen,
		interval:  defaultInterval,
		timeout:   defaultTimeout,
		fall:      defaultFall,
		rise:      defaultRise,
		stale:     defaultStale,
		skew:      30 * time.Second,
		detect:    detectBoth,
		allDown:   allDownServeAll,
		unknownUp: true,
		readyWait: defaultReadyWait,
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
