package report

import (
	"reflect"
	"strings"
	"testing"
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
		var req struct {
			Action  string `json:"action"`
			Cluster string `json:"cluster"`
			Reason  string `json:"reason,omitempty"`
		}
		if err := DecodeStrict([]byte(tc.in), &req); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.in, err, tc.ok)
		}
	}
	// Nested objects are checked too: a check's keys, in an array.
	var rep Report
	nested := `{"version":1,"cluster":"east","boot_id":"b","sequence":1,"sent_at":"2026-01-01T00:00:00Z","healthy":true,"interval_ms":1,"checks":[{"name":"a","Healthy":true}]}`
	if err := DecodeStrict([]byte(nested), &rep); err == nil {
		t.Error("a case-variant key inside checks[] was accepted")
	}
	if err := DecodeStrict([]byte(strings.Replace(nested, `"Healthy"`, `"healthy"`, 1)), &rep); err != nil {
		t.Errorf("valid nested report: %v", err)
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
		var fast, slow Report
		errFast, errSlow := DecodeStrict(data, &fast), decodeStrictSlow(data, &slow)
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
	b, _ := (&Report{Version: 1, Cluster: "east", BootID: "b1", Sequence: 1, IntervalMS: 100, Checks: []Check{{Name: "web", Kind: "http", Critical: true, Detail: "status 500"}}}).Encode()
	s := strictScan{data: b}
	if !s.value(keyNodeOf(reflect.TypeFor[*Report]()), 0) || !s.end() {
		t.Fatalf("the scan refused %s", b)
	}
	for _, bad := range []string{strings.Replace(string(b), `"healthy"`, `"Healthy"`, 1), string(b) + "{}"} {
		if s := (strictScan{data: []byte(bad)}); s.value(keyNodeOf(reflect.TypeFor[*Report]()), 0) && s.end() {
			t.Errorf("the scan passed %s", bad)
		}
	}
}
