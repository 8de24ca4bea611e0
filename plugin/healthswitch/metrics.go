package healthswitch

import (
	"sync"

	"github.com/coredns/coredns/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are package-level: creating them in setup would register them twice
// on reload.
var (
	clusterStateGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "cluster_state",
		Help: "1 for the state each cluster is in now, 0 for the others.",
	}, []string{"cluster", "state"})
	transitions = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "transitions_total",
		Help: "Cluster state transitions, by the state entered.",
	}, []string{"cluster", "to"})
	snapshotEpoch = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "snapshot_epoch",
		Help: "Epoch of the answer snapshot served now.",
	})
	allDownCount = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "all_down_answers_total",
		Help: "Answers given while no cluster of the name was up, by all_down mode.",
	}, []string{"mode"})
	reportsAccepted = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "reports_accepted_total",
		Help: "Sidecar reports accepted, by cluster and whether a peer forwarded them.",
	}, []string{"cluster", "forwarded"})
	reportsRejected = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "reports_rejected_total",
		Help: "Requests to the push API rejected, by reason.",
	}, []string{"reason"})
	reportAge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "report_age_seconds",
		Help: "Age of the last accepted report per cluster at the moment it was received (sender clock to receiver clock).",
	}, []string{"cluster"})
	lastReportTime = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "last_report_timestamp_seconds",
		Help: "Unix time the last accepted report of each cluster was received.",
	}, []string{"cluster"})
	receivedToApplied = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "receive_to_applied_seconds",
		Help:    "From a signal reaching this server to the new answers being served, per transition.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
	}, []string{"cluster"})
	observedToApplied = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "detection_to_switch_seconds",
		Help:    "From a fault being observed (by the sidecar or the probe) to the new answers being served.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"cluster"})
	probeDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "probe_duration_seconds",
		Help:    "Active probe round trips, by cluster and result.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"cluster", "result"})
	signalDisagreements = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "signal_disagreements_total",
		Help: "Times the sidecar and the active probe came to disagree about a cluster.",
	}, []string{"cluster"})
	notifications = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "notifications_total",
		Help: "Notify webhooks and peer forwards sent, by kind and result.",
	}, []string{"kind", "result"})
	storeConnected = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "store_connected",
		Help: "1 while the store (state file or etcd) works, 0 while it does not and answers come from memory, by kind.",
	}, []string{"kind"})
	storeErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "store_errors_total",
		Help: "Store operations that failed, by operation.",
	}, []string{"op"})
	corruptStateFiles = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "store_corrupt_total",
		Help: "State files found unreadable at start and moved aside.",
	})
	storeRelists = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "store_relists_total",
		Help: "Full relists of the etcd prefix after a compaction or a failed watch.",
	})
	storeReplicas = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "store_replicas",
		Help: "Replicas present in etcd (presence/), as last listed.",
	})
)

// Push API hardening (limits.go, access.go).
var (
	apiConnsDropped = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "api_connections_dropped_total",
		Help: "Push API connections closed before or instead of serving a request, by reason: per_source (over the per-address connection limit), evicted (an unauthenticated connection closed to make room at max_connections), full (max_connections reached, nothing to evict), slow_headers (no complete request header in time), no_request (closed without a request: garbage or the client left).",
	}, []string{"reason"})
	apiConnsOpen = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "api_connections_open",
		Help: "Push API connections open now.",
	})
)

// The status page's event stream (stream.go).
var (
	streamSubscribers = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "stream_subscribers",
		Help: "Readers of /v1/events/stream connected now.",
	})
	streamDropped = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: plugin.Namespace, Subsystem: pluginName, Name: "stream_dropped_total",
		Help: "Readers of /v1/events/stream disconnected for reading too slowly.",
	})
)

// acceptedCounter is the reports_accepted_total child of a cluster, made on
// its first accepted report and kept: a lookup by label values on every
// report hashes the labels and allocates.
func acceptedCounter(cluster, forwarded string) prometheus.Counter {
	key := [2]string{cluster, forwarded}
	acceptedChildren.mu.RLock()
	c, ok := acceptedChildren.m[key]
	acceptedChildren.mu.RUnlock()
	if ok {
		return c
	}
	c = reportsAccepted.WithLabelValues(cluster, forwarded)
	acceptedChildren.mu.Lock()
	acceptedChildren.m[key] = c
	acceptedChildren.mu.Unlock()
	return c
}

// acceptedChildren holds the children by cluster and forwarded. Only names
// of configured clusters get here, so it stays small.
var acceptedChildren = struct {
	mu sync.RWMutex
	m  map[[2]string]prometheus.Counter
}{m: map[[2]string]prometheus.Counter{}}
