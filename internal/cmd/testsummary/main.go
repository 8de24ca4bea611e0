// Command testsummary reads `go test -json` on stdin, prints what a person
// needs from it (package results, the full output of failed tests) and ends
// with one line that counts passed, skipped and failed tests and names the
// programs whose absence made tests skip. `make test` pipes into it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// needRE matches the skip message of testutil.Need ("needs X on PATH").
var needRE = regexp.MustCompile(`needs (\S+) on PATH`)

type summary struct {
	passed, skipped, failed int
	pkgFailed               []string
	missing                 map[string]int // program -> tests skipped for it
	skipWhy                 map[string]int // other skip reasons -> count
	output                  map[string][]string
}

func main() { os.Exit(run(os.Stdin, os.Stdout)) }

func run(in io.Reader, out io.Writer) int {
	s := &summary{missing: map[string]int{}, skipWhy: map[string]int{}, output: map[string][]string{}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			fmt.Fprintln(out, sc.Text()) // not JSON: a build error, print as is
			continue
		}
		s.add(out, ev)
	}
	fmt.Fprintln(out, s.line())
	if s.failed > 0 || len(s.pkgFailed) > 0 {
		return 1
	}
	return 0
}

func (s *summary) add(out io.Writer, ev event) {
	key := ev.Package + " " + ev.Test
	switch ev.Action {
	case "output":
		s.output[key] = append(s.output[key], ev.Output)
		if ev.Test == "" && !strings.HasPrefix(ev.Output, "=== ") && !strings.HasPrefix(ev.Output, "--- ") &&
			!strings.HasPrefix(ev.Output, "PASS") && !strings.HasPrefix(ev.Output, "FAIL\t") && !strings.HasPrefix(ev.Output, "ok ") &&
			ev.Output != "FAIL\n" {
			fmt.Fprint(out, ev.Output) // package-level output: build errors, TestMain logs
		}
		return
	case "pass":
		if ev.Test == "" {
			fmt.Fprintf(out, "ok   %s %s\n", ev.Package, secs(ev.Elapsed))
		} else {
			s.passed++
		}
	case "skip":
		if ev.Test == "" {
			fmt.Fprintf(out, "---  %s (no tests)\n", ev.Package)
			break
		}
		s.skipped++
		s.noteSkip(s.output[key])
	case "fail":
		if ev.Test == "" {
			s.pkgFailed = append(s.pkgFailed, ev.Package)
			fmt.Fprintf(out, "FAIL %s %s\n", ev.Package, secs(ev.Elapsed))
			break
		}
		s.failed++
		fmt.Fprintf(out, "--- FAIL: %s (%s)\n", ev.Test, ev.Package)
		for _, l := range s.output[key] {
			if !strings.HasPrefix(l, "=== ") {
				fmt.Fprint(out, "    ", l)
			}
		}
	}
	if ev.Action == "pass" || ev.Action == "skip" || ev.Action == "fail" {
		delete(s.output, key)
	}
}

// noteSkip files a skipped test under the program it missed, or its reason.
func (s *summary) noteSkip(lines []string) {
	for _, l := range lines {
		if m := needRE.FindStringSubmatch(l); m != nil {
			s.missing[m[1]]++
			return
		}
	}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- ") {
			continue
		}
		if i := strings.Index(l, ": "); i >= 0 && strings.Contains(l[:i], ".go:") {
			l = l[i+2:] // drop the file:line prefix
		}
		s.skipWhy[l]++
		return
	}
	s.skipWhy["(no reason given)"]++
}

func (s *summary) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tests: %d passed, %d skipped, %d failed", s.passed, s.skipped, s.failed)
	if len(s.pkgFailed) > 0 {
		fmt.Fprintf(&b, "; packages failed: %s", strings.Join(s.pkgFailed, ", "))
	}
	if len(s.missing) > 0 {
		fmt.Fprintf(&b, "; skipped for missing programs: %s (make deps installs them)", counted(s.missing))
	}
	if len(s.skipWhy) > 0 {
		fmt.Fprintf(&b, "; other skips: %s", counted(s.skipWhy))
	}
	return b.String()
}

func counted(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s (%d)", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func secs(f float64) string {
	return (time.Duration(f * float64(time.Second))).Round(10 * time.Millisecond).String()
}
