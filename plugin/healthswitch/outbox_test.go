package healthswitch

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/healthswitch/healthswitch/internal/sender"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

func TestSenderKeys(t *testing.T) {
	for key, kind := range map[string]string{
		notifyKey("east", "http://x/n"):            "notify",
		hookKey("east"):                            "hook",
		peerKey("http://p:8053", "report", "east"): "peer",
		"odd": "odd",
	} {
		if got := keyKind(key); got != kind {
			t.Errorf("keyKind(%q) = %q, want %q", key, got, kind)
		}
	}
	if peerKey("p", "report", "east") == peerKey("p", "report", "west") || peerKey("p", "report", "east") == peerKey("p", "drain", "east") {
		t.Error("peer keys must differ per cluster and per kind")
	}
}

// A destination's status merges its keys: the latest attempt decides
// whether it is acknowledged; failures and drops add up. The plugin's
// notifications_total counts each attempt by kind and result.
func TestOutboxStatusAndMetrics(t *testing.T) {
	var code = http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			return
		}
		w.WriteHeader(code)
	}))
	defer srv.Close()
	s := newSender()
	defer s.Close()
	okBefore := counterValue(notifications.WithLabelValues("peer", "ok"))
	errBefore := counterValue(notifications.WithLabelValues("peer", "error"))
	s.Send("peer|p|report|east", sender.Message{URL: srv.URL + "/fail"})
	testutil.WaitFor(t, 5*time.Second, "a failure", func() bool { r, _ := s.Status("peer|p|report|east"); return r.Failures > 0 })
	s.Send("peer|p|report|west", sender.Message{URL: srv.URL + "/ok"})
	testutil.WaitFor(t, 5*time.Second, "a delivery", func() bool { r, _ := s.Status("peer|p|report|west"); return r.Delivered })
	st := outboxStatusOf(s, "p", "peer|p|report|east", "peer|p|report|west", "peer|p|drain|east")
	if !st.Acknowledged || st.Code != 200 || st.Failures == 0 || st.LastOK.IsZero() || st.URL != "p" {
		t.Errorf("merged status %+v", st)
	}
	if counterValue(notifications.WithLabelValues("peer", "ok")) != okBefore+1 ||
		counterValue(notifications.WithLabelValues("peer", "error")) <= errBefore {
		t.Error("notifications_total not counted by kind and result")
	}
	if empty := outboxStatusOf(s, "q", "peer|q|report|east"); empty.Acknowledged || !empty.At.IsZero() {
		t.Errorf("status of a destination never used: %+v", empty)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}
