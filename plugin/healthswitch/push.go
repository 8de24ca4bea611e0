package healthswitch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	signedAt, err := report.VerifyAnyAt(cl.keys, ts, sig, body, received, h.cfg.skew)
	if err != nil {
		return signatureError(err)
	}
	forwarded := hdr.Get(report.HeaderForwarded) != ""
	if err := h.engine.applyReport(&rep, signedAt, received); err != nil {
		return engineError(err)
	}
	reportsAccepted.WithLabelValues(rep.Cluster, strconv.FormatBool(forwarded)).Inc()
	if !forwarded {
		h.engine.forward(rep.Cluster, body, ts, sig)
	}
	return nil
}

// engineError maps the engine's errors to the push API's statuses.
func engineError(err error) *apiError {
	switch {
	case errors.Is(err, ErrReplay):
		return reject(http.StatusConflict, "replay", "%v", err)
	case errors.Is(err, ErrUnknownCluster):
		return reject(http.StatusNotFound, "unknown_cluster", "%v", err)
	}
	return reject(http.StatusInternalServerError, "internal", "%v", err)
}

// signatureError maps a failed verification: a clock off by more than skew
// is a conflict, anything else unauthorized.
func signatureError(err error) *apiError {
	if errors.Is(err, report.ErrSkew) {
		return reject(http.StatusConflict, "skew", "%v", err)
	}
	return reject(http.StatusUnauthorized, "signature", "%v", err)
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
		if aerr == nil {
			if err := h.engine.drain(name, drain, opRequestOf(r.Header, body), 2*h.cfg.skew); err != nil {
				aerr = engineError(err)
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
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Action != action || req.Cluster != cluster {
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
	if _, err := report.VerifyAnyAt(h.cfg.adminKeys, hdr.Get(report.HeaderTimestamp), hdr.Get(report.HeaderSignature), body, h.engine.now(), h.cfg.skew); err != nil {
		return signatureError(err)
	}
	return nil
}
