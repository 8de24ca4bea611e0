package healthswitch

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// What a sender sees: strict bodies are 400 over HTTP, for operator
// requests and for reports.
func TestStrictBodiesOverHTTP(t *testing.T) {
	admin := writeKey(t, "admin-key-0123456789")
	adminKey := []byte("admin-key-0123456789")
	h := newPushHS(t, "admin_key_file "+admin)
	for _, b := range []string{
		`{"action":"drain","cluster":"east"}junk`,
		`{"Action":"drain","cluster":"east"}`,
		`{"action":"drain","CLUSTER":"east"}`,
		`{"action":"drain","cluster":"east","action":"drain"}`,
	} {
		if rec := post(t, h, "/v1/clusters/east/drain", []byte(b), adminKey, time.Now()); rec.Code != http.StatusBadRequest {
			t.Errorf("drain body %s: %d, want 400", b, rec.Code)
		}
	}
	good := string(body(t, "east", "b1", 1, true))
	for _, b := range []string{
		strings.Replace(good, `"healthy"`, `"Healthy"`, 1),
		strings.Replace(good, `"cluster":"east"`, `"cluster":"east","cluster":"east"`, 1),
		good + "junk",
	} {
		if rec := post(t, h, "/v1/report", []byte(b), pushKey, time.Now()); rec.Code != http.StatusBadRequest {
			t.Errorf("report %s: %d, want 400", b, rec.Code)
		}
	}
	if s := state(h, "east"); s != StateUnknown {
		t.Errorf("east %s after refused bodies", s)
	}
	if rec := post(t, h, "/v1/report", []byte(good), pushKey, time.Now()); rec.Code != http.StatusNoContent {
		t.Errorf("the well-formed report: %d %s", rec.Code, rec.Body)
	}
}

// An operator request applies once: the same request with its signature
// in upper-case hex is the same request (409), and so is one signed
// before the last applied one.
func TestOperatorRequestsApplyOnce(t *testing.T) {
	admin := writeKey(t, "admin-key-0123456789")
	adminKey := []byte("admin-key-0123456789")
	h := newPushHS(t, "admin_key_file "+admin)
	drain := adminBody("drain", "east")
	signed := time.Now()
	ts, sig := report.Sign(adminKey, signed, drain)
	send := func(path string, b []byte, ts, sig string) int {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(b))
		req.Header.Set(report.HeaderTimestamp, ts)
		req.Header.Set(report.HeaderSignature, sig)
		rec := httptest.NewRecorder()
		h.api.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := send("/v1/clusters/east/drain", drain, ts, sig); code != 200 {
		t.Fatalf("drain: %d", code)
	}
	// Only the canonical (lower-case) signature verifies, so an upper-cased
	// copy of a used request is no new request: it is refused as unsigned.
	upper := "v1=" + strings.ToUpper(strings.TrimPrefix(sig, "v1="))
	if code := send("/v1/clusters/east/drain", drain, ts, upper); code != http.StatusUnauthorized {
		t.Errorf("replayed drain with the signature upper-cased: %d, want 401", code)
	}
	// An undrain signed a second before the applied drain: refused, even
	// though it was never seen.
	undrain := adminBody("undrain", "east")
	ts2, sig2 := report.Sign(adminKey, signed.Add(-time.Second), undrain)
	if code := send("/v1/clusters/east/undrain", undrain, ts2, sig2); code != http.StatusConflict {
		t.Errorf("undrain signed before the last applied drain: %d, want 409", code)
	}
	if s := state(h, "east"); s != StateDrained {
		t.Errorf("east %s, want still drained", s)
	}
	if got := h.engine.operatorFenceOf("east"); got.UnixMilli() != signed.UnixMilli() {
		t.Errorf("operator fence %v, want %v", got, signed)
	}
	ts3, sig3 := report.Sign(adminKey, signed.Add(time.Millisecond), undrain)
	if code := send("/v1/clusters/east/undrain", undrain, ts3, sig3); code != 200 {
		t.Errorf("undrain signed after: %d", code)
	}
}
