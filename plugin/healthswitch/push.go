package healthswitch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/healthswitch/healthswitch/internal/redact"
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
	h.gate = newAPIGate(h.cfg.api)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/report", h.handleReport)
	mux.HandleFunc("GET /v1/status", h.readable(h.handleStatus))
	mux.HandleFunc("GET /v1/events", h.readable(h.handleEvents))
	mux.HandleFunc("POST /v1/clusters/{name}/drain", h.handleDrain(true))
	mux.HandleFunc("POST /v1/clusters/{name}/undrain", h.handleDrain(false))
	h.pageRoutes(mux) // GET /, GET /page/*, GET /v1/events/stream (page.go, stream.go), all behind h.readable
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done, aerr := h.admit(w, r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		defer done()
		mux.ServeHTTP(w, r)
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

func (h *HealthSwitch) handleReport(w http.ResponseWriter, r *http.Request) {
	body, aerr := readBody(w, r)
	if aerr == nil {
		aerr = h.ingest(r.Context(), body, r.Header, h.engine.now())
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ingest verifies and applies one report. Nothing changes unless it is
// accepted. Only a verified report waits for an apply slot.
func (h *HealthSwitch) ingest(ctx context.Context, body []byte, hdr http.Header, received time.Time) *apiError {
	var rep report.Report
	if err := report.DecodeStrict(body, &rep); err != nil {
		return reject(http.StatusBadRequest, "malformed", "%v: %v", report.ErrMalformed, err)
	}
	if err := rep.Validate(); err != nil {
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
	trust(ctx)
	// What a sidecar writes in a check's detail is shown in /v1/status,
	// events and logs: no credential of the cluster's may travel there.
	for i := range rep.Checks {
		rep.Checks[i].Detail = redact.Text(rep.Checks[i].Detail)
	}
	release, aerr := h.applySlot(ctx)
	if aerr != nil {
		return aerr
	}
	defer release()
	forwarded := hdr.Get(report.HeaderForwarded) != ""
	if err := h.engine.applyReport(&rep, signedAt, received); err != nil {
		return engineError(err)
	}
	acceptedCounter(rep.Cluster, strconv.FormatBool(forwarded)).Inc()
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
		body, aerr := readBody(w, r)
		var signedAt time.Time
		if aerr == nil {
			signedAt, aerr = h.authorizeAdmin(body, r.Header)
		}
		var req adminRequest
		if aerr == nil {
			trust(r.Context())
			req, aerr = checkAdminBody(body, action, name)
		}
		if aerr == nil {
			// Verify accepts one canonical signature string per request, so the
			// header as sent is the request's identity.
			op := opRequest{signedAt: signedAt, signature: r.Header.Get(report.HeaderSignature), reason: req.Reason}
			aerr = h.applyDrain(r.Context(), name, drain, op)
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

// applyDrain applies a verified operator request once: it must be signed
// after the last one applied to the cluster (the operator fence, kept by
// the engine and by the store), and only verified requests take an apply
// slot.
func (h *HealthSwitch) applyDrain(ctx context.Context, name string, drain bool, req opRequest) *apiError {
	release, aerr := h.applySlot(ctx)
	if aerr != nil {
		return aerr
	}
	defer release()
	if err := h.engine.drain(name, drain, req, 2*h.cfg.skew); err != nil {
		return engineError(err)
	}
	return nil
}

func checkAdminBody(body []byte, action, cluster string) (adminRequest, *apiError) {
	var req adminRequest
	if err := report.DecodeStrict(body, &req); err != nil || req.Action != action || req.Cluster != cluster {
		return req, reject(http.StatusBadRequest, "malformed",
			`body must be exactly {"action":%q,"cluster":%q} with an optional "reason", matching the path`, action, cluster)
	}
	return req, nil
}

// authorizeAdmin checks a request signed like a report, with the admin key,
// and returns when it was signed.
func (h *HealthSwitch) authorizeAdmin(body []byte, hdr http.Header) (time.Time, *apiError) {
	if len(h.cfg.adminKeys) == 0 {
		return time.Time{}, reject(http.StatusForbidden, "no_admin_key", "operator actions need admin_key_file in the Corefile")
	}
	at, err := report.VerifyAnyAt(h.cfg.adminKeys, hdr.Get(report.HeaderTimestamp), hdr.Get(report.HeaderSignature), body, h.engine.now(), h.cfg.skew)
	if err != nil {
		return time.Time{}, signatureError(err)
	}
	return at, nil
}
