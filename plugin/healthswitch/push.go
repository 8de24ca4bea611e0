package healthswitch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// apiError is a rejected push API request: its status, the metric reason,
// and a message for the sender.
type apiError struct {
	status int
	reason string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func reject(status int, reason, format string, args ...any) *apiError {
	return &apiError{status: status, reason: reason, msg: fmt.Sprintf(format, args...)}
}

func (h *HealthSwitch) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/report", h.handleReport)
	mux.HandleFunc("GET /v1/status", h.handleStatus)
	mux.HandleFunc("GET /v1/events", h.handleEvents)
	mux.HandleFunc("POST /v1/clusters/{name}/drain", h.handleDrain(true))
	mux.HandleFunc("POST /v1/clusters/{name}/undrain", h.handleDrain(false))
	sem := make(chan struct{}, maxInFlight)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
			mux.ServeHTTP(w, r)
		default:
			writeError(w, reject(http.StatusServiceUnavailable, "busy", "too many requests in flight"))
		}
	})
}

func writeError(w http.ResponseWriter, e *apiError) {
	reportsRejected.WithLabelValues(e.reason).Inc()
	writeJSON(w, e.status, map[string]string{"error": e.msg, "reason": e.reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// readBody reads at most report.MaxBodySize bytes.
func readBody(r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(io.LimitReader(r.Body, report.MaxBodySize+1))
	if err != nil {
		return nil, reject(http.StatusBadRequest, "read", "reading body: %v", err)
	}
	if len(body) > report.MaxBodySize {
		return nil, reject(http.StatusRequestEntityTooLarge, "too_large", "body over %d bytes", report.MaxBodySize)
	}
	return body, nil
}

func (h *HealthSwitch) handleReport(w http.ResponseWriter, r *http.Request) {
	received := h.engine.now()
	body, aerr := readBody(r)
	if aerr == nil {
		aerr = h.ingest(body, r.Header, received)
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ingest verifies and applies one report. Nothing changes unless it is
// accepted.
func (h *HealthSwitch) ingest(body []byte, hdr http.Header, received time.Time) *apiError {
	rep, err := report.Decode(body)
	if err != nil {
		return reject(http.StatusBadRequest, "malformed", "%v", err)
	}
	cl := h.cfg.cluster(rep.Cluster)
	if cl == nil {
		return reject(http.StatusNotFound, "unknown_cluster", "unknown cluster %q", rep.Cluster)
	}
	if cl.key == nil {
		return reject(http.StatusUnauthorized, "no_key", "cluster %s has no key_file configured", rep.Cluster)
	}
	ts, sig := hdr.Get(report.HeaderTimestamp), hdr.Get(report.HeaderSignature)
	if err := report.VerifyAny(cl.keys, ts, sig, body, received, h.cfg.skew); err != nil {
		if errors.Is(err, report.ErrSkew) {
			return reject(http.StatusConflict, "skew", "%v", err)
		}
		return reject(http.StatusUnauthorized, "signature", "%v", err)
	}
	ms, _ := strconv.ParseInt(ts, 10, 64) // Verify checked it
	forwarded := hdr.Get(report.HeaderForwarded) != ""
	if aerr := h.engine.applyReport(&rep, time.UnixMilli(ms), received); aerr != nil {
		return aerr
	}
	reportsAccepted.WithLabelValues(rep.Cluster, strconv.FormatBool(forwarded)).Inc()
	if !forwarded {
		h.engine.forward(body, ts, sig)
	}
	return nil
}

// applyReport takes a verified report as the cluster's sidecar signal.
func (e *engine) applyReport(rep *report.Report, signedAt, received time.Time) *apiError {
	e.mu.Lock()
	defer e.mu.Unlock()
	cs := e.clusters[rep.Cluster]
	switch {
	case rep.BootID == cs.bootID && rep.Sequence <= cs.sequence:
		return reject(http.StatusConflict, "replay", "sequence %d of boot %s is not above %d", rep.Sequence, rep.BootID, cs.sequence)
	case rep.BootID != cs.bootID && cs.report != nil && signedAt.Before(cs.signedAt):
		// A new boot_id must also be newer than the last accepted report, or
		// an old boot's reports could be replayed within the skew window.
		return reject(http.StatusConflict, "replay", "boot %s signed at %s, before the last accepted report", rep.BootID, signedAt.Format(time.RFC3339Nano))
	}
	cs.bootID, cs.sequence, cs.signedAt = rep.BootID, rep.Sequence, signedAt
	cs.report, cs.reportAt, cs.signaled = rep, received, true
	reportAge.WithLabelValues(rep.Cluster).Set(received.Sub(rep.SentAt).Seconds())
	lastReportTime.WithLabelValues(rep.Cluster).Set(float64(received.UnixNano()) / 1e9)

	var observed time.Time
	if rep.Healthy {
		cs.sidecar, cs.sidecarWhy = sigUp, "healthy"
		observed = recovered(rep)
	} else {
		cs.sidecar = sigDown
		cs.sidecarWhy, observed = failing(rep)
	}
	e.armStale(cs, e.cfg.stale)
	e.noteDisagreement(cs)
	e.update(cs, cause{observed: observed, received: received})
	return nil
}

// failing summarizes the failed critical checks of a report, and when the
// earliest of them was observed.
func failing(rep *report.Report) (string, time.Time) {
	var parts []string
	observed := rep.SentAt
	for _, c := range rep.Checks {
		if c.Healthy || !c.Critical {
			continue
		}
		part := c.Name + " check failed"
		if c.Detail != "" {
			part = c.Name + ": " + c.Detail
		}
		parts = append(parts, part)
		if !c.ObservedAt.IsZero() && c.ObservedAt.Before(observed) {
			observed = c.ObservedAt
		}
	}
	if len(parts) == 0 {
		return "reported unhealthy", observed
	}
	return strings.Join(parts, "; "), observed
}

// recovered is when a healthy report's checks were last observed: the
// latest run of a critical check, which is the run that found the last
// failing one healthy again.
func recovered(rep *report.Report) time.Time {
	var observed time.Time
	for _, c := range rep.Checks {
		if c.Critical && c.ObservedAt.After(observed) && !c.ObservedAt.After(rep.SentAt) {
			observed = c.ObservedAt
		}
	}
	if observed.IsZero() {
		return rep.SentAt
	}
	return observed
}

// armStale (re)starts the countdown after which the sidecar's signal is
// stale. A timer, so the query path never checks ages. Called with mu held.
func (e *engine) armStale(cs *clusterState, d time.Duration) {
	cs.staleDeadline = e.now().Add(d)
	if cs.staleTimer != nil {
		cs.staleTimer.Reset(max(d, 0))
		return
	}
	cs.staleTimer = time.AfterFunc(max(d, 0), func() { e.expire(cs) })
}

func (e *engine) expire(cs *clusterState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || cs.sidecar == sigStale {
		return
	}
	now := e.now()
	if left := cs.staleDeadline.Sub(now); left > 0 {
		cs.staleTimer.Reset(left)
		return
	}
	cs.sidecar = sigStale
	cs.sidecarWhy = fmt.Sprintf("no valid report for %s", e.cfg.stale)
	e.update(cs, cause{observed: cs.staleDeadline, received: now})
}

// noteDisagreement counts the moments the two signals come to disagree.
// Called with mu held, after either signal changed.
func (e *engine) noteDisagreement(cs *clusterState) {
	dis := (cs.sidecar == sigUp && cs.probe == sigDown) || (cs.sidecar == sigDown && cs.probe == sigUp)
	if dis && !cs.disagree {
		signalDisagreements.WithLabelValues(cs.cfg.name).Inc()
	}
	cs.disagree = dis
}

// adminRequest is the body of an operator action. The signature covers the
// body only, so the body names the action and the cluster: a signed drain of
// one cluster cannot be replayed as an undrain, or against another cluster.
type adminRequest struct {
	Action  string `json:"action"`
	Cluster string `json:"cluster"`
	Reason  string `json:"reason,omitempty"`
}

func (h *HealthSwitch) handleDrain(drain bool) http.HandlerFunc {
	action := "undrain"
	if drain {
		action = "drain"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		body, aerr := readBody(r)
		if aerr == nil {
			aerr = h.authorizeAdmin(body, r.Header)
		}
		if aerr == nil {
			aerr = checkAdminBody(body, action, name)
		}
		if aerr == nil && !h.engine.firstUse(r.Header.Get(report.HeaderSignature), h.engine.now(), 2*h.cfg.skew) {
			aerr = reject(http.StatusConflict, "replay", "this signed request was already applied")
		}
		if aerr == nil {
			if err := h.engine.setDrained(name, drain); err != nil {
				aerr = reject(http.StatusNotFound, "unknown_cluster", "%v", err)
			}
		}
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		if r.Header.Get(report.HeaderForwarded) == "" {
			h.engine.forwardDrain(name, drain, body)
		}
		h.handleStatus(w, r)
	}
}

func checkAdminBody(body []byte, action, cluster string) *apiError {
	var req adminRequest
	if err := report.DecodeStrict(body, &req); err != nil || req.Action != action || req.Cluster != cluster {
		return reject(http.StatusBadRequest, "malformed",
			`body must be {"action":%q,"cluster":%q} with an optional "reason", matching the path`, action, cluster)
	}
	return nil
}

// authorizeAdmin checks a request signed like a report, with the admin key.
func (h *HealthSwitch) authorizeAdmin(body []byte, hdr http.Header) *apiError {
	if len(h.cfg.adminKeys) == 0 {
		return reject(http.StatusForbidden, "no_admin_key", "operator actions need admin_key_file in the Corefile")
	}
	err := report.VerifyAny(h.cfg.adminKeys, hdr.Get(report.HeaderTimestamp), hdr.Get(report.HeaderSignature), body, h.engine.now(), h.cfg.skew)
	switch {
	case errors.Is(err, report.ErrSkew):
		return reject(http.StatusConflict, "skew", "%v", err)
	case err != nil:
		return reject(http.StatusUnauthorized, "signature", "%v", err)
	}
	return nil
}

// firstUse remembers an operator request's signature for as long as its
// timestamp is acceptable, and reports whether it is new.
func (e *engine) firstUse(sig string, now time.Time, keep time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s, until := range e.adminSeen {
		if now.After(until) {
			delete(e.adminSeen, s)
		}
	}
	if _, seen := e.adminSeen[sig]; seen {
		return false
	}
	e.adminSeen[sig] = now.Add(keep)
	return true
}
