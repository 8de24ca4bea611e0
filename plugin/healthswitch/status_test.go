package healthswitch

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// /v1/status shows, per notify target and per peer, whether the last
// message was acknowledged, when, and with which status code.
func TestStatusShowsDeliveries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	defer srv.Close()
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n notify "+srv.URL+"/n\n}\npeers "+srv.URL+"\nstale 1h")
	h.engine.startBackground()
	t.Cleanup(h.engine.stopBackground)
	post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	var doc struct {
		Clusters []struct {
			Notify []map[string]any `json:"notify"`
		} `json:"clusters"`
		Peers []map[string]any `json:"peers"`
	}
	testutil.WaitFor(t, 5*time.Second, "both acknowledged", func() bool {
		rec := httptest.NewRecorder()
		h.api.ServeHTTP(rec, localRequest("/v1/status"))
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		n, p := doc.Clusters[0].Notify[0], doc.Peers[0]
		return n["acknowledged"] == true && p["acknowledged"] == true
	})
	for _, d := range []map[string]any{doc.Clusters[0].Notify[0], doc.Peers[0]} {
		if d["code"] != float64(202) || d["at"] == nil || d["last_ok"] == nil || d["failures"] != float64(0) {
			t.Errorf("delivery status %v", d)
		}
	}
}

func TestEventsMalformedSince(t *testing.T) {
	h := newPushHS(t, "")
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, localRequest("/v1/events?since=x"))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("since=x: %d", rec.Code)
	}
}
