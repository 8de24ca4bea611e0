package test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// postSig posts body with the given signature headers, as a client that
// writes them itself would.
func postSig(t *testing.T, url string, body []byte, ts, sig string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(report.HeaderTimestamp, ts)
	req.Header.Set(report.HeaderSignature, sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Every body the push API takes is read strictly: what encoding/json would
// accept by folding case, keeping the last of two members or ignoring junk
// after the object is refused with 400 and changes nothing, even when it is
// signed with the right key. And a used operator request does not work again
// with its signature spelt in upper case.
func TestRealBinaryStrictBodies(t *testing.T) {
	const adminKey = "admin-key-0123456789abcdef"
	admin := filepath.Join(t.TempDir(), "admin.key")
	if err := os.WriteFile(admin, []byte(adminKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := realCoreDNS(t, pushCorefile(t, "admin_key_file "+admin))
	east := newPusher("east", eastKey)
	if code, _ := east.push(s.api, false); code != 204 {
		t.Fatalf("unhealthy report: %d", code)
	}
	if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.12" {
		t.Fatalf("east down: %q", got)
	}
	reportBody := func(healthy string) string {
		return `{"version":1,"cluster":"east","boot_id":"b","sequence":99,"sent_at":"2026-11-22T10:00:00Z",` + healthy + `}`
	}
	drain := "/v1/clusters/west/drain"
	tests := []struct {
		name, path, body string
		key              string
	}{
		{"report: Healthy", "/v1/report", reportBody(`"Healthy":true`), eastKey},
		{"report: healthy twice", "/v1/report", reportBody(`"healthy":false,"healthy":true`), eastKey},
		{"report: trailing junk", "/v1/report", reportBody(`"healthy":true`) + `x`, eastKey},
		{"report: trailing object", "/v1/report", reportBody(`"healthy":true`) + `{}`, eastKey},
		{"drain: Action", drain, `{"Action":"drain","cluster":"west"}`, adminKey},
		{"drain: CLUSTER", drain, `{"action":"drain","CLUSTER":"west"}`, adminKey},
		{"drain: cluster twice", drain, `{"action":"drain","cluster":"east","cluster":"west"}`, adminKey},
		{"drain: trailing junk", drain, `{"action":"drain","cluster":"west"}junk`, adminKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, err := postSigned(s.api+tc.path, []byte(tc.body), []byte(tc.key), time.Now())
			if err != nil || code != 400 {
				t.Errorf("status %d (%v), want 400", code, err)
			}
			if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.12" {
				t.Errorf("answer changed to %q", got)
			}
		})
	}

	t.Run("used drain with its signature upper-cased", func(t *testing.T) {
		if code, _ := east.push(s.api, true); code != 204 {
			t.Fatalf("healthy report: %d", code)
		}
		body := []byte(`{"action":"drain","cluster":"west"}`)
		drainedAt := time.Now()
		ts, sig := report.Sign([]byte(adminKey), drainedAt, body)
		if code := postSig(t, s.api+drain, body, ts, sig); code != 200 {
			t.Fatalf("drain: %d", code)
		}
		if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.11" {
			t.Fatalf("west drained: %q", got)
		}
		if code, _ := postSigned(s.api+"/v1/clusters/west/undrain", []byte(`{"action":"undrain","cluster":"west"}`), []byte(adminKey), drainedAt.Add(2*time.Millisecond)); code != 200 { // the operator fence: strictly later
			t.Fatalf("undrain: %d", code)
		}
		for _, replay := range []string{sig, "v1=" + strings.ToUpper(sig[3:]), "V1=" + sig[3:]} {
			if code := postSig(t, s.api+drain, body, ts, replay); code != 409 && code != 401 {
				t.Errorf("replayed drain with signature %s…: %d, want 409 or 401", replay[:8], code)
			}
		}
		if got := answerSet(s.dns, "svc1.net."); got != "127.0.0.11 127.0.0.12" {
			t.Errorf("after the replays: %q, want both clusters", got)
		}
	})
}
