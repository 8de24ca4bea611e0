package main

import (
	"bytes"
	"strings"
	"testing"
)

// A stream as `go test -json` writes it: one pass, a skip for a missing
// program, a skip for another reason, one failure.
const stream = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0.01}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: needs haproxy on PATH\n"}
{"Action":"skip","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Test":"TestC","Output":"    c_test.go:3: starts PostgreSQL\n"}
{"Action":"skip","Package":"p","Test":"TestC"}
{"Action":"output","Package":"p","Test":"TestD","Output":"    d_test.go:7: got 2, want 3\n"}
{"Action":"fail","Package":"p","Test":"TestD"}
{"Action":"fail","Package":"p","Elapsed":1.5}
`

func TestSummaryLine(t *testing.T) {
	var out bytes.Buffer
	code := run(strings.NewReader(stream), &out)
	if code != 1 {
		t.Errorf("exit %d, want 1 (a test failed)", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	want := "tests: 1 passed, 2 skipped, 1 failed; packages failed: p; skipped for missing programs: haproxy (1) (make deps installs them); other skips: starts PostgreSQL (1)"
	if last != want {
		t.Errorf("last line\n got %q\nwant %q", last, want)
	}
	if !strings.Contains(out.String(), "d_test.go:7: got 2, want 3") {
		t.Errorf("the failed test's output is missing:\n%s", out.String())
	}
}

func TestAllPassedExitsZero(t *testing.T) {
	var out bytes.Buffer
	in := `{"Action":"pass","Package":"p","Test":"TestA"}` + "\n" + `{"Action":"pass","Package":"p","Elapsed":0.2}` + "\n"
	if code := run(strings.NewReader(in), &out); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out.String())
	}
	if !strings.HasSuffix(out.String(), "tests: 1 passed, 0 skipped, 0 failed\n") {
		t.Errorf("output:\n%s", out.String())
	}
}
