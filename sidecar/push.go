package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// Push timing. A push that takes longer than pushTimeout is abandoned; the
// next report (at most one heartbeat later) replaces it anyway.
const (
	pushTimeout    = time.Second
	backoffInitial = 25 * time.Millisecond
	backoffMax     = time.Second
)

// target pushes reports to one receiver. Its mailbox holds one report: a
// newer one replaces an unsent one, so a slow or dead receiver costs one
// body of memory and never delays the other targets or newer state.
type target struct {
	url    string
	key    []byte
	client *http.Client
	m      *metrics
	log    *slog.Logger

	wake chan struct{}

	mu       sync.Mutex
	pending  []byte
	last     string // result of the last attempt
	lastAt   time.Time
	lastOKAt time.Time
	failing  bool
}

func newTarget(url string, key []byte, m *metrics, log *slog.Logger) *target {
	return &target{
		url: url, key: key, m: m, log: log,
		client: &http.Client{
			Timeout: pushTimeout,
			// Never follow a redirect with a signed body.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		wake: make(chan struct{}, 1),
	}
}

// offer puts body in the mailbox, replacing any report not yet sent.
func (t *target) offer(body []byte) {
	t.mu.Lock()
	if t.pending != nil {
		t.m.pushSuperseded.WithLabelValues(t.url).Inc()
	}
	t.pending = body
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *target) take() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.pending
	t.pending = nil
	return b
}

// loop sends what arrives in the mailbox. A failed send is retried with a
// capped backoff, unless a newer report arrives first: then the newer one is
// sent at once and the old one is dropped.
func (t *target) loop(ctx context.Context) {
	var body []byte
	backoff := time.Duration(0)
	for {
		if body == nil {
			select {
			case <-ctx.Done():
				return
			case <-t.wake:
			}
			if body = t.take(); body == nil {
				continue
			}
		}
		if !t.send(ctx, body) {
			body, backoff = nil, 0
			continue
		}
		backoff = min(max(2*backoff, backoffInitial), backoffMax)
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-t.wake:
			if newer := t.take(); newer != nil {
				body = newer
			}
		case <-timer.C:
		}
		timer.Stop()
	}
}

// send posts body once, signed now, and says whether to retry it.
func (t *target) send(ctx context.Context, body []byte) (retry bool) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		t.record(pushRejected, err)
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "healthswitch-sidecar/"+Version)
	report.SignRequest(req, t.key, start, body)
	resp, err := t.client.Do(req)
	t.m.pushDuration.WithLabelValues(t.url).Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		t.record(pushNetworkError, err)
		return true
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		t.record(pushOK, nil)
		return false
	case code == http.StatusConflict:
		// A replay or clock skew: this body can never be accepted; the next
		// report has a new sequence and timestamp.
		t.record(pushConflict, fmt.Errorf("status %d: %s", code, bytes.TrimSpace(msg)))
		return false
	case code == http.StatusTooManyRequests || code >= 500:
		t.record(pushServerError, fmt.Errorf("status %d: %s", code, bytes.TrimSpace(msg)))
		return true
	default:
		t.record(pushRejected, fmt.Errorf("status %d: %s", code, bytes.TrimSpace(msg)))
		return false
	}
}

// record counts an attempt and logs only when a target starts or stops
// failing, so a dead receiver does not write four lines a second.
func (t *target) record(result string, err error) {
	t.m.pushes.WithLabelValues(t.url, result).Inc()
	now := time.Now()
	t.mu.Lock()
	t.last, t.lastAt = result, now
	wasFailing := t.failing
	t.failing = result != pushOK && result != pushConflict
	if !t.failing {
		t.lastOKAt = now
	}
	t.mu.Unlock()
	switch {
	case t.failing && !wasFailing:
		t.log.Warn("push failing", "target", t.url, "result", result, "err", err)
	case !t.failing && wasFailing:
		t.log.Info("push recovered", "target", t.url)
	case result == pushConflict:
		t.log.Debug("push refused as replay or skew", "target", t.url, "err", err)
	}
}

// TargetStatus is one push target in /status.
type TargetStatus struct {
	URL        string    `json:"url"`
	LastResult string    `json:"last_result,omitempty"`
	LastAt     time.Time `json:"last_at,omitzero"`
	LastOKAt   time.Time `json:"last_ok_at,omitzero"`
}

func (t *target) status() TargetStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TargetStatus{URL: t.url, LastResult: t.last, LastAt: t.lastAt, LastOKAt: t.lastOKAt}
}
