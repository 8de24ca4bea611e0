package sidecar

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is the JSON of /status.
type Status struct {
	Cluster  string         `json:"cluster"`
	BootID   string         `json:"boot_id"`
	Sequence uint64         `json:"sequence"`
	Healthy  bool           `json:"healthy"`
	Checks   []CheckStatus  `json:"checks"`
	Targets  []TargetStatus `json:"targets"`
	Ingress  *IngressStatus `json:"ingress,omitempty"`
	// Scheduling is the process's real-time priority, when one is asked
	// for or in force (realtime_priority).
	Scheduling *SchedStatus `json:"scheduling,omitempty"`
}

// CheckStatus is one check in /status: the debounced state and the last run.
type CheckStatus struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`
	Critical   bool      `json:"critical"`
	State      string    `json:"state"` // unknown | up | down (after fall/rise)
	Healthy    bool      `json:"healthy"`
	LastOK     bool      `json:"last_ok"` // the last run's own result
	Detail     string    `json:"detail,omitempty"`
	Output     string    `json:"output,omitempty"`
	ObservedAt time.Time `json:"observed_at,omitzero"`
	DurationMS float64   `json:"duration_ms"`
	IntervalMS int64     `json:"interval_ms"`
	TimeoutMS  int64     `json:"timeout_ms"`
	Runs       uint64    `json:"runs"`
	Failures   uint64    `json:"failures"`
	Watch      string    `json:"watch"`                 // off | events | fallback (Contract 8)
	WatchError string    `json:"watch_error,omitempty"` // why the event source fell back to polling
}

// Status returns the state of every check and target.
func (s *Sidecar) Status() Status {
	g := s.current()
	st := Status{Cluster: g.cfg.Cluster, BootID: s.bootID, Sequence: s.seq.Load(), Healthy: true}
	for _, r := range g.runners {
		c, state, last, runs, failures := r.snapshot()
		watch, watchErr := r.watchStatus()
		if c.Critical && !c.Healthy {
			st.Healthy = false
		}
		st.Checks = append(st.Checks, CheckStatus{
			Name: c.Name, Kind: c.Kind, Critical: c.Critical, State: state.String(), Healthy: c.Healthy,
			LastOK: last.Healthy, Detail: c.Detail, Output: last.Output, ObservedAt: c.ObservedAt,
			DurationMS: c.DurationMS, IntervalMS: r.check.interval.Milliseconds(), TimeoutMS: r.check.timeout.Milliseconds(),
			Runs: runs, Failures: failures, Watch: watch, WatchError: watchErr,
		})
	}
	for _, t := range g.targets {
		st.Targets = append(st.Targets, t.status())
	}
	st.Ingress = s.dist.status()
	st.Scheduling = schedStatus()
	return st
}

// Handler serves /healthz (the sidecar process itself is alive, not the
// cluster), /metrics, /status and the plugin's notifications.
func (s *Sidecar) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.Handle("POST /v1/distribution", s.dist)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Status())
	})
	return mux
}
