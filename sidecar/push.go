package sidecar

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	hsprobe "github.com/healthswitch/healthswitch/internal/prober"
	"github.com/healthswitch/healthswitch/internal/sender"
	"github.com/healthswitch/healthswitch/report"
)

// Push timing. A push that takes longer than pushTimeout is abandoned; the
// next report (at most one heartbeat later) replaces it anyway.
const (
	pushTimeout    = time.Second
	backoffInitial = 25 * time.Millisecond
	backoffMax     = time.Second
)

// target pushes reports to one receiver through the shared background
// sender (internal/sender): the newest report replaces an unsent one, so a
// slow or dead receiver costs one body of memory and never delays the other
// targets or newer state; 2xx and 409 are done, other 4xx given up, 5xx,
// 408, 425, 429 and network errors retried with a capped backoff. Each
// attempt is signed when it leaves.
type target struct {
	url string
	key []byte
	s   *sender.Sender
}

func newTarget(url string, key []byte, m *metrics, log *slog.Logger) *target {
	t := &target{url: url, key: key}
	t.s = sender.New(sender.Config{
		Timeout: pushTimeout, MinBackoff: backoffInitial, MaxBackoff: backoffMax,
		UserAgent: hsprobe.UserAgent(Version, "sidecar"),
		Observe: func(_ string, _ *sender.Message, o sender.Outcome, took time.Duration) {
			m.pushes.WithLabelValues(url, string(o)).Inc()
			m.pushDuration.WithLabelValues(url).Observe(took.Seconds())
		},
		Dropped: func(string, *sender.Message) { m.pushSuperseded.WithLabelValues(url).Inc() },
		Log: func(_, msg string, err error) {
			switch msg {
			case "recovered":
				log.Info("push recovered", "target", url)
			default:
				log.Warn("push "+msg, "target", url, "err", err)
			}
		},
	})
	return t
}

// offer hands body to the sender, replacing any report not yet sent.
func (t *target) offer(body []byte) {
	t.s.Send(t.url, sender.Message{URL: t.url, Body: body, Sign: t.sign})
}

func (t *target) sign(req *http.Request, now time.Time, body []byte) {
	report.SignRequest(req, t.key, now, body)
}

// loop runs until ctx ends, then stops the sender and its attempts.
func (t *target) loop(ctx context.Context) {
	<-ctx.Done()
	t.s.Close()
}

// TargetStatus is one push target in /status.
type TargetStatus struct {
	URL        string    `json:"url"`
	LastResult string    `json:"last_result,omitempty"`
	LastAt     time.Time `json:"last_at,omitzero"`
	LastOKAt   time.Time `json:"last_ok_at,omitzero"`
	LastCode   int       `json:"last_code,omitempty"`
}

func (t *target) status() TargetStatus {
	r, _ := t.s.Status(t.url)
	return TargetStatus{URL: t.url, LastResult: string(r.Outcome), LastAt: r.At, LastOKAt: r.LastOK, LastCode: r.Code}
}
