package healthswitch

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

func TestDecodeStrict(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"action":"drain","cluster":"east"}`, true},
		{` {"action":"drain","cluster":"east","reason":"x"} ` + "\n", true},
		{`{"action":"drain","cluster":"east"}x`, false},
		{`{"action":"drain","cluster":"east"}{}`, false},
		{`{"action":"drain","cluster":"east"} 1`, false},
		{`{"Action":"drain","cluster":"east"}`, false},
		{`{"action":"drain","CLUSTER":"east"}`, false},
		{`{"action":"drain","cluster":"east","cluster":"west"}`, false},
		{`{"action":"drain","cluster":"east","other":1}`, false},
		{`{"action":"drain","cluster":"east"`, false},
		{`[]`, false},
	} {
		var req adminRequest
		if err := decodeStrict([]byte(tc.in), &req); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.in, err, tc.ok)
		}
	}
	// Nested objects are checked too: a check's keys, in an array.
	var rep report.Report
	nested := `{"version":1,"cluster":"east","boot_id":"b","sequence":1,"sent_at":"2026-01-01T00:00:00Z","healthy":true,"interval_ms":1,"checks":[{"name":"a","Healthy":true}]}`
	if err := decodeStrict([]byte(nested), &rep); err == nil {
		t.Error("a case-variant key inside checks[] was accepted")
	}
	if err := decodeStrict([]byte(strings.Replace(nested, `"Healthy"`, `"healthy"`, 1)), &rep); err != nil {
		t.Errorf("valid nested report: %v", err)
	}
}

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

// The one-pass way and the token by token way agree on every body: the
// same error text (or none) and the same report.
func FuzzDecodeStrictFastSlow(f *testing.F) {
	good := `{"version":1,"cluster":"east","boot_id":"b","sequence":1,"sent_at":"2026-01-01T00:00:00Z","healthy":true,"interval_ms":1,"checks":[{"name":"a","kind":"http","healthy":false,"critical":true,"observed_at":"2026-01-01T00:00:00Z","duration_ms":1.5,"detail":"x \u003c \"y\""}]}`
	for _, s := range []string{
		good, good + " \n", good + "x", good + "{}",
		strings.Replace(good, `"healthy"`, `"Healthy"`, 1),
		strings.Replace(good, `"name"`, `"\u006eame"`, 1),
		strings.Replace(good, `"kind"`, `"cluster"`, 1),
		strings.Replace(good, `"cluster":"east"`, `"cluster":"east","cluster":"east"`, 1),
		strings.Replace(good, `"sequence":1`, `"sequence":tru`, 1),
		strings.Replace(good, `"sequence":1`, `"sequence":"1"`, 1),
		strings.Replace(good, `"sent_at":"2026-01-01T00:00:00Z"`, `"sent_at":{"x":1}`, 1),
		`{}`, `[]`, ``, ` `, `{"version":1`, `{"checks":[[{"name":"a"}]]}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast, slow report.Report
		errFast, errSlow := decodeStrict(data, &fast), decodeStrictSlow(data, &slow)
		if (errFast == nil) != (errSlow == nil) || errFast != nil && errFast.Error() != errSlow.Error() {
			t.Fatalf("%q: one pass %v, token by token %v", data, errFast, errSlow)
		}
		if errFast == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: one pass %+v, token by token %+v", data, fast, slow)
		}
	})
}

// What a sidecar sends takes the one-pass way (else the fuzz test above
// compares the slow way with itself).
func TestDecodeStrictPlainBodyIsOnePass(t *testing.T) {
	b := body(t, "east", "b1", 1, false)
	s := strictScan{data: b}
	if !s.value(keyNodeOf(reflect.TypeFor[*report.Report]()), 0) || !s.end() {
		t.Fatalf("the scan refused %s", b)
	}
	for _, bad := range []string{strings.Replace(string(b), `"healthy"`, `"Healthy"`, 1), string(b) + "{}"} {
		if s := (strictScan{data: []byte(bad)}); s.value(keyNodeOf(reflect.TypeFor[*report.Report]()), 0) && s.end() {
			t.Errorf("the scan passed %s", bad)
		}
	}
}
