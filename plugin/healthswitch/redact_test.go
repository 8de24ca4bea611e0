package healthswitch

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// Nothing /v1/status or /v1/events shows carries a credential: probe,
// notify and peer URLs, and the details a sidecar reports.
func TestStatusAndEventsRedacted(t *testing.T) {
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n probe http://bob:probe-pw@127.0.0.1:1/healthz?token=probe-tok\n notify http://127.0.0.1:1/hook?api_key=notify-key\n}\n"+
		"cluster west 198.51.100.10 {\n key_file KEY\n}\npeers http://peer:peer-pw@127.0.0.1:1\n")
	h.engine.startBackground()
	t.Cleanup(h.engine.stopBackground)
	rep := report.Report{Version: 1, Cluster: "east", BootID: "b", Sequence: 1, SentAt: time.Now().UTC(), IntervalMS: 100,
		Checks: []report.Check{{Name: "web", Kind: "http", Critical: true, ObservedAt: time.Now().UTC(),
			Detail: `Get "http://admin:detail-pw@10.0.0.1/x?secret=detail-tok": refused`}}}
	b, _ := rep.Encode()
	if rec := post(t, h, "/v1/report", b, pushKey, time.Now()); rec.Code != 204 {
		t.Fatalf("report: %d %s", rec.Code, rec.Body)
	}
	secrets := []string{"probe-pw", "probe-tok", "notify-key", "peer-pw", "detail-pw", "detail-tok"}
	for _, path := range []string{"/v1/status", "/v1/events"} {
		rec := httptest.NewRecorder()
		h.api.ServeHTTP(rec, localRequest(path))
		out := rec.Body.String()
		if !json.Valid([]byte(out)) || !strings.Contains(out, "xxxxx") {
			t.Errorf("%s shows nothing redacted: %s", path, out)
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s shows %q: %s", path, s, out)
			}
		}
	}
}
