package healthswitch

import (
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/internal/prober"
	"github.com/healthswitch/healthswitch/internal/redact"
	"github.com/healthswitch/healthswitch/internal/sender"
)

// Every outgoing message of the plugin (notify webhooks, peer forwards,
// on_down/on_up hooks) goes through one internal/sender per engine. Its keys
// decide what supersedes what: per destination, and for peers per cluster,
// only the newest message is kept.
func newSender() *sender.Sender {
	return sender.New(sender.Config{
		Timeout:    2 * time.Second,
		MinBackoff: 25 * time.Millisecond,
		MaxBackoff: time.Second,
		UserAgent:  prober.UserAgent("", "plugin"),
		Observe: func(key string, _ *sender.Message, o sender.Outcome, _ time.Duration) {
			result := "ok"
			if !o.Delivered() {
				result = "error"
			}
			notifications.WithLabelValues(keyKind(key), result).Inc()
		},
		Dropped: func(key string, _ *sender.Message) { notifications.WithLabelValues(keyKind(key), "dropped").Inc() },
		Log: func(key, msg string, err error) {
			if err != nil {
				log.Warningf("%s: %s: %s", redact.Text(key), msg, redact.Text(err.Error()))
			} else {
				log.Infof("%s: %s", redact.Text(key), msg)
			}
		},
	})
}

// Sender keys: kind|... The kind is the metric label.
func notifyKey(cluster, url string) string { return "notify|" + cluster + "|" + url }
func hookKey(cluster string) string        { return "hook|" + cluster }
func peerKey(peer, what, cluster string) string {
	return "peer|" + peer + "|" + what + "|" + cluster
}

func keyKind(key string) string {
	kind, _, _ := strings.Cut(key, "|")
	return kind
}

// outboxStatus is one destination in /v1/status: whether its last message
// was acknowledged (2xx, or 409 for a report the peer has already), when,
// and with which status code.
type outboxStatus struct {
	URL          string    `json:"url"`
	Acknowledged bool      `json:"acknowledged"`
	At           time.Time `json:"at,omitzero"`
	Code         int       `json:"code,omitempty"`
	LastOK       time.Time `json:"last_ok,omitzero"`
	LastErr      string    `json:"last_error,omitempty"`
	Failures     uint64    `json:"failures"`
	Dropped      uint64    `json:"dropped"`
}

// outboxStatusOf merges the results of a destination's keys: the latest
// attempt says whether it is acknowledged now.
func outboxStatusOf(s *sender.Sender, url string, keys ...string) outboxStatus {
	st := outboxStatus{URL: redact.Text(url)}
	for _, k := range keys {
		r, ok := s.Status(k)
		if !ok {
			continue
		}
		if !r.At.Before(st.At) {
			st.Acknowledged, st.At, st.Code, st.LastErr = r.Delivered, r.At, r.Code, r.Error
		}
		if r.LastOK.After(st.LastOK) {
			st.LastOK = r.LastOK
		}
		st.Failures += r.Failures
		st.Dropped += r.Dropped
	}
	st.LastErr = redact.Text(st.LastErr)
	return st
}
