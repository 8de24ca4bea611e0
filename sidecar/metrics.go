package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

const namespace = "healthswitch_sidecar"

// metrics live in the sidecar's own registry. Labels stay low-cardinality:
// check names and target URLs come from the config; results are fixed words.
type metrics struct {
	checkRuns        *prometheus.CounterVec   // check, result: ok | fail
	checkUp          *prometheus.GaugeVec     // check: debounced state, 1 up, 0 down
	checkDuration    *prometheus.HistogramVec // check
	checkTransitions *prometheus.CounterVec   // check, state
	healthy          prometheus.Gauge
	reports          *prometheus.CounterVec   // reason: change | heartbeat
	pushes           *prometheus.CounterVec   // target, result
	pushDuration     *prometheus.HistogramVec // target
	pushSuperseded   *prometheus.CounterVec   // target
	reloads          *prometheus.CounterVec   // result: ok | error
	checkWatched     *prometheus.GaugeVec     // check: 1 event source running, 0 polling only
	watchFallbacks   *prometheus.CounterVec   // check: event sources that could not start
	checkWakes       *prometheus.CounterVec   // check: events that ran the check at once
	realtime         prometheus.Gauge         // the SCHED_FIFO priority in force, 0: normal
}

// Push results, the values of the pushes_total result label.
const (
	pushOK           = "ok"            // 2xx
	pushConflict     = "conflict"      // 409: replay or clock skew; not retried
	pushRejected     = "rejected"      // other 4xx: bad key, unknown cluster; not retried
	pushServerError  = "server_error"  // 5xx or 429; retried
	pushNetworkError = "network_error" // no answer; retried
)

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

func newMetrics(reg *prometheus.Registry, version string) *metrics {
	f := promauto.With(reg)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info", Help: "Always 1; the version label says which build runs."}, []string{"version"}).WithLabelValues(version).Set(1)
	return &metrics{
		checkRuns: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "check_runs_total",
			Help: "Check runs by raw result (before fall/rise)."}, []string{"check", "result"}),
		checkUp: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "check_up",
			Help: "Debounced state of each check: 1 up, 0 down."}, []string{"check"}),
		checkDuration: f.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "check_duration_seconds",
			Help: "How long each check run took.", Buckets: latencyBuckets}, []string{"check"}),
		checkTransitions: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "check_transitions_total",
			Help: "Debounced state changes of each check, by the new state."}, []string{"check", "state"}),
		healthy: f.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "healthy",
			Help: "1 when every critical check is up, as last reported."}),
		reports: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "reports_total",
			Help: "Reports built and handed to every target, by why."}, []string{"reason"}),
		pushes: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "pushes_total",
			Help: "Push attempts by target and result: ok, conflict, rejected, server_error, network_error."}, []string{"target", "result"}),
		pushDuration: f.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "push_duration_seconds",
			Help: "Round trip of each push attempt.", Buckets: latencyBuckets}, []string{"target"}),
		pushSuperseded: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "pushes_superseded_total",
			Help: "Reports replaced by a newer one before they reached a target."}, []string{"target"}),
		reloads: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "reloads_total",
			Help: "Config reloads by result."}, []string{"result"}),
		checkWatched: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "check_watched",
			Help: "1 while the check's event source runs beside polling, 0 when it is polled only."}, []string{"check"}),
		watchFallbacks: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "watch_fallbacks_total",
			Help: "Event sources that could not start (or stopped), leaving the check polled only."}, []string{"check"}),
		realtime: f.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "realtime_priority",
			Help: "The SCHED_FIFO priority the sidecar's threads run at (realtime_priority); 0: the normal policy, also when the priority asked for could not be had."}),
		checkWakes: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "check_wakes_total",
			Help: "Events of a check's source that ran it at once."}, []string{"check"}),
	}
}

// forgetCheck drops the series of a check that a reload removed.
func (m *metrics) forgetCheck(name string) {
	l := prometheus.Labels{"check": name}
	m.checkRuns.DeletePartialMatch(l)
	m.checkUp.DeletePartialMatch(l)
	m.checkDuration.DeletePartialMatch(l)
	m.checkTransitions.DeletePartialMatch(l)
	m.checkWatched.DeletePartialMatch(l)
	m.watchFallbacks.DeletePartialMatch(l)
	m.checkWakes.DeletePartialMatch(l)
}

func (m *metrics) forgetTarget(url string) {
	l := prometheus.Labels{"target": url}
	m.pushes.DeletePartialMatch(l)
	m.pushDuration.DeletePartialMatch(l)
	m.pushSuperseded.DeletePartialMatch(l)
}

// ingressMetrics are those of the receiver of the plugin's notifications
// (POST /v1/distribution) and of the ingress actions it runs.
type ingressMetrics struct {
	notifications *prometheus.CounterVec   // result: applied, failed, signature, skew, replay, stale, ...
	actions       *prometheus.CounterVec   // kind, action: stop | resume, result: ok | error
	applyDuration *prometheus.HistogramVec // action
	state         *prometheus.GaugeVec     // state: unknown | stopped | serving
}

func newIngressMetrics(reg *prometheus.Registry) *ingressMetrics {
	f := promauto.With(reg)
	return &ingressMetrics{
		notifications: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "ingress_notifications_total",
			Help: "Notifications received on /v1/distribution, by result: applied, failed, signature, skew, replay, stale, malformed, wrong_cluster, too_large, no_ingress."}, []string{"result"}),
		actions: f.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "ingress_actions_total",
			Help: "Ingress actions run (after their retries), by kind, action and result."}, []string{"kind", "action", "result"}),
		applyDuration: f.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "ingress_apply_duration_seconds",
			Help: "From a notification accepted to every ingress action done.", Buckets: latencyBuckets}, []string{"action"}),
		state: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "ingress_state",
			Help: "What the last applied notification made of the ingress: 1 for the current state (unknown, stopped, serving)."}, []string{"state"}),
	}
}

func (m *ingressMetrics) setState(s string) {
	for _, v := range []string{"unknown", "stopped", "serving"} {
		val := 0.0
		if v == s {
			val = 1
		}
		m.state.WithLabelValues(v).Set(val)
	}
}
