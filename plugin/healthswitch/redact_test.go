package healthswitch

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://bob:hunter2@192.0.2.1:8080/healthz":               "http://bob:REDACTED@192.0.2.1:8080/healthz",
		"https://192.0.2.1/healthz?token=abc&x=1":                 "https://192.0.2.1/healthz?token=REDACTED&x=1",
		"https://h/p?API_KEY=abc&access_token=t&sig=s&page=2":     "https://h/p?API_KEY=REDACTED&access_token=REDACTED&sig=REDACTED&page=2",
		"https://h/cb#access_token=abc&state=1":                   "https://h/cb#access_token=REDACTED&state=1",
		"tcp://198.51.100.10:443":                                 "tcp://198.51.100.10:443",
		"postgres://app:s3cret@db:5432/app?sslmode=disable":       "postgres://app:REDACTED@db:5432/app?sslmode=disable",
		"http://onlyuser@h/":                                      "http://onlyuser@h/",
		"https://h/p?Password=x&passwd=y&pass=z&auth=a&secret=s":  "https://h/p?Password=REDACTED&passwd=REDACTED&pass=REDACTED&auth=REDACTED&secret=REDACTED",
		"https://h/p?signature=abc&X-Amz-Credential=c&plain=keep": "https://h/p?signature=REDACTED&X-Amz-Credential=REDACTED&plain=keep",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}

func TestRedactText(t *testing.T) {
	for in, want := range map[string]string{
		`http get: Get "http://bob:***@192.0.2.1/healthz?token=abc": connection refused`: `http get: Get "http://bob:REDACTED@192.0.2.1/healthz?token=REDACTED": connection refused`,
		`host=db user=app password=s3cret dbname=app`:                                    `host=db user=app password=REDACTED dbname=app`,
		`dial app:s3cret@tcp(127.0.0.1:3306)/app: refused`:                               `dial app:REDACTED@tcp(127.0.0.1:3306)/app: refused`,
		`Authorization: Bearer abcdefghijklmnop`:                                         `Authorization: Bearer REDACTED`,
		`status 500`:                                                                     `status 500`,
		`sidecar: web: status 503; db: timeout`:                                          `sidecar: web: status 503; db: timeout`,
	} {
		if got := redactText(in); got != want {
			t.Errorf("redactText(%q)\n got %q\nwant %q", in, got, want)
		}
		if again := redactText(redactText(in)); again != want {
			t.Errorf("redactText is not idempotent on %q: %q", in, again)
		}
	}
}

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
		if !json.Valid([]byte(out)) || !strings.Contains(out, "REDACTED") {
			t.Errorf("%s shows nothing redacted: %s", path, out)
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s shows %q: %s", path, s, out)
			}
		}
	}
}
