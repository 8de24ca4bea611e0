package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

const (
	actionStop   = report.ActionStop
	actionResume = report.ActionResume
)

// Ingress states in /status and the ingress_state metric: what the last
// successfully applied notification made of the ingress.
const (
	ingressUnknown = "unknown" // nothing applied since the sidecar started
	ingressStopped = "stopped"
	ingressServing = "serving"
)

// distributor receives the plugin's notifications (POST /v1/distribution)
// and applies them to the cluster's ingress. It outlives config reloads, so
// its fence does too.
type distributor struct {
	s       *Sidecar
	m       *ingressMetrics
	now     func() time.Time
	started int64 // unix ms; nothing signed before is obeyed (a replay into a restarted sidecar)

	applyMu sync.Mutex // one notification at a time, in the order they arrive
	fence   fenceKey   // the newest decision verified so far; under applyMu
	fenceOK bool       // and whether applying it succeeded

	mu       sync.Mutex // what /status shows, so it never waits for an apply
	state    string
	last     *NotificationStatus
	actions  []ActionResult
	received map[string]uint64 // by result
}

// fenceKey orders decisions: by when the DNS server made the decision (the
// notification's `at`, inside the signed body), then by its epoch. Not by
// the epoch alone: it starts again from 0 when the DNS server restarts and
// differs between replicas. Not by the signature's timestamp: a sender may
// sign each retry anew, so a late retry of an old decision would look new.
type fenceKey struct {
	at    int64 // unix nanoseconds
	epoch uint64
}

func (k fenceKey) after(o fenceKey) bool { return k.at > o.at || (k.at == o.at && k.epoch > o.epoch) }

func newDistributor(s *Sidecar) *distributor {
	d := &distributor{s: s, m: newIngressMetrics(s.reg), now: time.Now, state: ingressUnknown, received: map[string]uint64{}}
	d.started = d.now().UnixMilli()
	d.m.setState(ingressUnknown)
	return d
}

// NotificationStatus is the newest verified notification in /status.
type NotificationStatus struct {
	Action     string    `json:"action"`
	Reason     string    `json:"reason,omitempty"`
	Epoch      uint64    `json:"epoch"`
	SignedAt   time.Time `json:"signed_at"`
	At         time.Time `json:"at"` // when the plugin applied the change
	ReceivedAt time.Time `json:"received_at"`
	DurationMS float64   `json:"duration_ms"` // applying every action
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
}

// IngressStatus is the `ingress` part of /status.
type IngressStatus struct {
	State         string              `json:"state"` // unknown | stopped | serving
	Last          *NotificationStatus `json:"last,omitempty"`
	Actions       []ActionResult      `json:"actions"`       // each action's result for Last
	Notifications map[string]uint64   `json:"notifications"` // received, by result
}

func (d *distributor) status() *IngressStatus {
	if len(d.s.current().cfg.Ingress) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := &IngressStatus{State: d.state, Actions: append([]ActionResult{}, d.actions...), Notifications: map[string]uint64{}}
	if d.last != nil {
		l := *d.last
		st.Last = &l
	}
	for k, v := range d.received {
		st.Notifications[k] = v
	}
	return st
}

// Results of a notification, the values of the notifications_total label.
const (
	notifApplied      = "applied"
	notifFailed       = "failed"        // an action failed: 502
	notifSignature    = "signature"     // 401
	notifSkew         = "skew"          // 409
	notifReplay       = "replay"        // the decision applied last, again: 409
	notifStale        = "stale"         // older than the newest decision: 409
	notifMalformed    = "malformed"     // 400
	notifWrongCluster = "wrong_cluster" // 400
	notifTooLarge     = "too_large"     // 413
	notifNoIngress    = "no_ingress"    // 404
)

func (d *distributor) refuse(w http.ResponseWriter, code int, result, msg string) {
	d.count(result)
	d.s.log.Warn("notification refused", "result", result, "status", code, "why", msg)
	writeJSON(w, code, map[string]string{"error": msg})
}

func (d *distributor) count(result string) {
	d.m.notifications.WithLabelValues(result).Inc()
	d.mu.Lock()
	d.received[result]++
	d.mu.Unlock()
}

// ServeHTTP is POST /v1/distribution. It answers 200 only once every
// action succeeded, so the plugin's "acknowledged" means "applied".
func (d *distributor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := d.s.current().cfg
	if len(cfg.Ingress) == 0 {
		d.refuse(w, http.StatusNotFound, notifNoIngress, "no ingress actions configured")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, report.MaxBodySize+1))
	if err != nil {
		d.refuse(w, http.StatusBadRequest, notifMalformed, "reading the body: "+err.Error())
		return
	}
	if len(body) > report.MaxBodySize {
		d.refuse(w, http.StatusRequestEntityTooLarge, notifTooLarge, "body over 64 KiB")
		return
	}
	ts := r.Header.Get(report.HeaderTimestamp)
	err = report.VerifyAny(cfg.Keys, ts, r.Header.Get(report.HeaderSignature), body, d.now(), report.DefaultSkew)
	switch {
	case errors.Is(err, report.ErrSkew):
		d.refuse(w, http.StatusConflict, notifSkew, err.Error())
		return
	case err != nil:
		d.refuse(w, http.StatusUnauthorized, notifSignature, err.Error())
		return
	}
	n, err := decodeNotification(body)
	if err != nil {
		d.refuse(w, http.StatusBadRequest, notifMalformed, err.Error())
		return
	}
	if n.Cluster != cfg.Cluster {
		d.refuse(w, http.StatusBadRequest, notifWrongCluster, fmt.Sprintf("notification for cluster %q, this sidecar is %q", n.Cluster, cfg.Cluster))
		return
	}
	ms, _ := strconv.ParseInt(ts, 10, 64) // Verify has parsed it
	if n.At.After(time.UnixMilli(ms).Add(time.Second)) {
		// Decided after it was signed: a clock jump that would hold the
		// fence against every later decision. Refused.
		d.refuse(w, http.StatusBadRequest, notifMalformed, fmt.Sprintf("at %s is after the signature's time", n.At.Format(time.RFC3339Nano)))
		return
	}
	code, res := d.apply(cfg, n, ms)
	writeJSON(w, code, res)
}

// applyResponse is the answer to an accepted notification.
type applyResponse struct {
	Cluster    string         `json:"cluster"`
	Action     string         `json:"action"`
	Epoch      uint64         `json:"epoch"`
	Applied    bool           `json:"applied"`
	Error      string         `json:"error,omitempty"`
	Reason     string         `json:"reason,omitempty"` // why it was refused
	DurationMS float64        `json:"duration_ms"`
	Actions    []ActionResult `json:"actions,omitempty"`
}

// apply checks the fence and runs the actions, holding applyMu throughout
// so decisions are applied one at a time. The fence moves to every verified
// decision newer than it, applied or not; the same decision may be tried
// again only while it has not succeeded (the plugin resends it after a 502).
func (d *distributor) apply(cfg *Config, n report.Notification, signedMS int64) (int, applyResponse) {
	resp := applyResponse{Cluster: n.Cluster, Action: n.Action, Epoch: n.Epoch}
	key := fenceKey{at: n.At.UnixNano(), epoch: n.Epoch}
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	var refused string
	switch {
	case signedMS < d.started:
		refused, resp.Reason = notifStale, "signed before this sidecar started"
	case key == d.fence && d.fenceOK:
		refused, resp.Reason = notifReplay, "already applied"
	case !key.after(d.fence) && key != d.fence:
		refused, resp.Reason = notifStale, fmt.Sprintf("a newer decision (at %s, epoch %d) is known",
			time.Unix(0, d.fence.at).UTC().Format(time.RFC3339Nano), d.fence.epoch)
	}
	if refused != "" {
		d.count(refused)
		d.s.log.Warn("notification refused", "result", refused, "action", n.Action, "epoch", n.Epoch, "why", resp.Reason)
		return http.StatusConflict, resp
	}
	d.fence, d.fenceOK = key, false
	received := d.now()
	results := applyAll(context.Background(), cfg.Ingress, applyRequest{cluster: n.Cluster, action: n.Action, reason: n.Reason, epoch: n.Epoch})
	took := d.now().Sub(received)
	resp.Applied, resp.DurationMS, resp.Actions = true, float64(took.Microseconds())/1000, results
	for _, a := range results {
		d.m.actions.WithLabelValues(a.Kind, n.Action, okOrError(a.OK)).Inc()
		if !a.OK && resp.Applied {
			resp.Applied, resp.Error = false, fmt.Sprintf("%s %s: %s", a.Kind, a.Target, a.Error)
		}
	}
	d.m.applyDuration.WithLabelValues(n.Action).Observe(took.Seconds())
	d.fenceOK = resp.Applied
	d.record(n, signedMS, received, resp)
	if !resp.Applied {
		d.count(notifFailed)
		d.s.log.Error("ingress action failed", "action", n.Action, "epoch", n.Epoch, "err", resp.Error)
		return http.StatusBadGateway, resp
	}
	d.count(notifApplied)
	d.s.log.Info("ingress applied", "action", n.Action, "epoch", n.Epoch, "reason", n.Reason, "took", took)
	return http.StatusOK, resp
}

// record keeps what /status shows of a notification that ran.
func (d *distributor) record(n report.Notification, signedMS int64, received time.Time, resp applyResponse) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.actions = resp.Actions
	d.last = &NotificationStatus{Action: n.Action, Reason: n.Reason, Epoch: n.Epoch, SignedAt: time.UnixMilli(signedMS).UTC(),
		At: n.At, ReceivedAt: received.UTC(), DurationMS: resp.DurationMS, OK: resp.Applied, Error: resp.Error}
	if resp.Applied {
		d.state = ingressServing
		if n.Action == actionStop {
			d.state = ingressStopped
		}
		d.m.setState(d.state)
	}
}

func okOrError(ok bool) string {
	if ok {
		return "ok"
	}
	return "error"
}

// decodeNotification parses a notify body strictly: one JSON object, known
// keys only, none twice, the right version and action, and a time.
func decodeNotification(body []byte) (report.Notification, error) {
	var n report.Notification
	if err := report.DecodeStrict(body, &n); err != nil {
		return n, err
	}
	switch {
	case n.Version != report.Version:
		return n, fmt.Errorf("version %d, want %d", n.Version, report.Version)
	case n.Cluster == "":
		return n, errors.New("cluster is empty")
	case n.Action != actionStop && n.Action != actionResume:
		return n, fmt.Errorf("action %q: want %q or %q", n.Action, actionStop, actionResume)
	case n.At.IsZero():
		return n, errors.New("at is missing")
	}
	return n, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
