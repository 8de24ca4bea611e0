package report

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Go's own decoder matches member names case-insensitively, keeps the last of
// two equal members and ignores what follows a value when streaming: each of
// these would let a body say something other than what its signer checked.
func TestDecodeRefusesWhatEncodingJSONLetsThrough(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"case-variant member", strings.Replace(goodBody, `"healthy":false`, `"Healthy":true`, 1),
			`body: member "Healthy": unknown (names are case-sensitive: "healthy")`},
		{"case-variant member in a check", strings.Replace(goodBody, `"detail":`, `"DETAIL":`, 1),
			`checks[0]: member "DETAIL": unknown (names are case-sensitive: "detail")`},
		{"member given twice", strings.Replace(goodBody, `"healthy":false,`, `"healthy":false,"healthy":true,`, 1),
			`body: member "healthy" given twice`},
		{"member given twice, once escaped", strings.Replace(goodBody, `"healthy":false,`, `"healthy":false,"\u0068ealthy":true,`, 1),
			`body: member "healthy" given twice`},
		{"member given twice in a check", strings.Replace(goodBody, `"critical":true`, `"critical":true,"critical":false`, 1),
			`checks[0]: member "critical" given twice`},
		{"trailing object", goodBody + `{}`, "trailing data after the JSON value"},
		{"trailing junk", goodBody + ` x`, "after the JSON value: invalid character 'x'"},
		{"trailing bracket", goodBody + `]`, "after the JSON value"},
		{"array", `[` + goodBody + `]`, "body: want a JSON object, got ["},
		{"null", `null`, "body: want a JSON object, got null"},
		{"truncated", goodBody[:40], "unexpected EOF"},
		{"empty", ``, "unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var plain Report
			if tc.name == "case-variant member" && json.Unmarshal([]byte(tc.body), &plain) == nil && !plain.Healthy {
				t.Fatal("encoding/json no longer folds case: this case proves nothing")
			}
			r, err := Decode([]byte(tc.body))
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode = %+v, %v\nwant ErrMalformed containing %q", r, err, tc.want)
			}
		})
	}
	t.Run("white space after the object is fine", func(t *testing.T) {
		if _, err := Decode([]byte(" \n" + goodBody + "\r\n\t ")); err != nil {
			t.Error(err)
		}
	})
	t.Run("null for a list is fine", func(t *testing.T) {
		r, err := Decode([]byte(strings.Replace(goodBody, goodBody[strings.Index(goodBody, `[`):len(goodBody)-1], "null", 1)))
		if err != nil || r.Checks != nil {
			t.Errorf("%+v, %v", r, err)
		}
	})
}

// operatorBody has the shape of the plugin's drain and undrain bodies.
type operatorBody struct {
	Action  string `json:"action"`
	Cluster string `json:"cluster"`
	Reason  string `json:"reason,omitempty"`
}

func TestDecodeStrictOperatorBody(t *testing.T) {
	var ok operatorBody
	if err := DecodeStrict([]byte(`{"action":"drain","cluster":"east","reason":"maintenance"}`), &ok); err != nil ||
		ok != (operatorBody{"drain", "east", "maintenance"}) {
		t.Fatalf("%+v, %v", ok, err)
	}
	tests := []struct{ name, body, want string }{
		{"Action", `{"Action":"drain","cluster":"east"}`, `member "Action": unknown (names are case-sensitive: "action")`},
		{"CLUSTER", `{"action":"drain","CLUSTER":"east"}`, `member "CLUSTER": unknown (names are case-sensitive: "cluster")`},
		{"duplicate cluster", `{"action":"drain","cluster":"west","cluster":"east"}`, `member "cluster" given twice`},
		{"trailing junk", `{"action":"drain","cluster":"east"}junk`, "after the JSON value"},
		{"unknown member", `{"action":"drain","cluster":"east","force":true}`, `member "force": unknown`},
		{"wrong type", `{"action":"drain","cluster":1}`, "cannot unmarshal number into Go struct field operatorBody.cluster of type string"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b operatorBody
			err := DecodeStrict([]byte(tc.body), &b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("DecodeStrict = %+v, %v; want an error containing %q", b, err, tc.want)
			}
		})
	}
}

// names lists the member names of every object in a JSON text, in order.
func names(t *testing.T, body []byte) []string {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	var out []string
	var stack []bool // per open container: is it an object, and is the next token a name
	expectName := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		if expectName {
			out = append(out, tok.(string))
			expectName = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, true)
		case json.Delim('['):
			stack = append(stack, false)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1] && dec.More() {
			expectName = true
		}
	}
}

var wireNames = map[string]bool{}

func init() {
	for _, t := range []reflect.Type{reflect.TypeFor[Report](), reflect.TypeFor[Check](), reflect.TypeFor[operatorBody]()} {
		for n := range fieldsOf(t) {
			wireNames[n] = true
		}
	}
}

// A report Decode accepts names every member exactly, re-encodes to a body
// that decodes to the same report, and verifies only with the one genuine
// signature string.
func FuzzDecodeVerify(f *testing.F) {
	now := time.UnixMilli(1_800_000_000_000)
	ts0, sig0 := Sign(testKey, now, []byte(goodBody))
	f.Add([]byte(goodBody), ts0, sig0)
	f.Add([]byte(strings.Replace(goodBody, `"healthy":false`, `"Healthy":true`, 1)), ts0, sig0)
	f.Add([]byte(goodBody+`{}`), ts0, strings.ToUpper(sig0))
	f.Add([]byte(`{"version":1}`), "", "")
	f.Add([]byte(`[]`), "x", "v1=zz")
	f.Fuzz(func(t *testing.T, body []byte, ts, sig string) {
		if r, err := Decode(body); err == nil {
			if r.Version != Version || r.Cluster == "" || r.BootID == "" || r.Sequence == 0 {
				t.Fatalf("Decode accepted an invalid report: %+v", r)
			}
			for _, n := range names(t, body) {
				if !wireNames[n] {
					t.Fatalf("Decode accepted member %q", n)
				}
			}
			again, err := r.Encode()
			if err != nil {
				t.Fatal(err)
			}
			r2, err := Decode(again)
			if err != nil || !reflect.DeepEqual(normal(r), normal(r2)) {
				t.Fatalf("round trip: %+v\n%+v, %v", r, r2, err)
			}
		}
		if Verify(testKey, ts, sig, body, now, DefaultSkew) == nil {
			ms, err := strconv.ParseInt(ts, 10, 64)
			if err != nil {
				t.Fatalf("Verify accepted timestamp %q", ts)
			}
			if gts, good := Sign(testKey, time.UnixMilli(ms), body); good != sig || gts != ts {
				t.Fatalf("Verify accepted %q %q; the one genuine form is %q %q", ts, sig, gts, good)
			}
		}
	})
}

// normal drops what a JSON round trip may change without changing meaning
// (monotonic clock, location pointers).
func normal(r Report) Report {
	r.SentAt = r.SentAt.UTC()
	for i := range r.Checks {
		r.Checks[i].ObservedAt = r.Checks[i].ObservedAt.UTC()
	}
	return r
}

// An operator body DecodeStrict accepts has only the exact member names,
// each once, and nothing after it.
func FuzzOperatorBody(f *testing.F) {
	f.Add([]byte(`{"action":"drain","cluster":"east","reason":"maintenance"}`))
	f.Add([]byte(`{"Action":"drain","CLUSTER":"east"}`))
	f.Add([]byte(`{"action":"drain","cluster":"west","cluster":"east"}`))
	f.Add([]byte(`{"action":"drain","cluster":"east"}junk`))
	f.Add([]byte(`{"action":"undrain","cluster":"e\u0061st","reason":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var b operatorBody
		if DecodeStrict(body, &b) != nil {
			return
		}
		seen := map[string]bool{}
		for _, n := range names(t, body) {
			if !wireNames[n] || seen[n] {
				t.Fatalf("accepted member %q (seen before: %v) in %q", n, seen[n], body)
			}
			seen[n] = true
		}
		var plain operatorBody
		if err := json.Unmarshal(body, &plain); err != nil || plain != b {
			t.Fatalf("encoding/json reads %+v (%v), DecodeStrict %+v", plain, err, b)
		}
	})
}

// Strict decoding reads the body twice (the member check, then the standard
// decoder): the baseline is encoding/json alone on the same body.
func BenchmarkDecode(b *testing.B) {
	body := []byte(goodBody)
	b.Run("strict", func(b *testing.B) {
		for b.Loop() {
			if _, err := Decode(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json-baseline", func(b *testing.B) {
		for b.Loop() {
			var r Report
			if err := json.Unmarshal(body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
