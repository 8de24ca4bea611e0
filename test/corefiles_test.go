package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/healthswitch/healthswitch/internal/corednstest"
	"github.com/healthswitch/healthswitch/internal/testutil"

	// The plugins the shipped Corefiles use.
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/whoami"

	_ "github.com/healthswitch/healthswitch/plugin/healthswitch"
)

var (
	reURL      = regexp.MustCompile(`\b(https?|tcp)://[^/\s]+`)
	reKeyFile  = regexp.MustCompile(`(key_file|admin_key_file)\s+\S+`) // read_key_file too
	reTLS      = regexp.MustCompile(`(?m)^(\s*tls)\s+\S+\s+\S+`)
	reZoneFile = regexp.MustCompile(`(?m)^(\s*file)\s+\S+`)
	reAddrLine = regexp.MustCompile(`(?m)^(\s*(?:listen|prometheus|health|ready))\s+\S+`)
	reBlockKey = regexp.MustCompile(`(?m)^([^\s#{}][^{]*)\{`)
	rePort     = regexp.MustCompile(`:\d+\b`)
)

// localize rewrites a shipped Corefile so it can start here: every port 0,
// every URL to a closed port on loopback (so probes, peers and notify send
// nothing beyond this machine), every key a temp file.
func localize(t *testing.T, corefile string) string {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	zone := filepath.Join(dir, "db")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	os.WriteFile(zone, []byte("$ORIGIN svc1.net.\n@ 3600 IN SOA ns1 hostmaster 1 7200 1800 86400 5\n@ IN NS ns1\n"), 0o600)
	s := reURL.ReplaceAllString(corefile, "$1://127.0.0.1:1")
	s = reKeyFile.ReplaceAllString(s, "$1 "+key)
	s = reZoneFile.ReplaceAllString(s, "$1 "+zone)
	if reTLS.MatchString(s) {
		_, cert, certKey, _ := testutil.SelfSigned(t)
		s = reTLS.ReplaceAllString(s, "$1 "+cert+" "+certKey)
	}
	s = reAddrLine.ReplaceAllString(s, "$1 127.0.0.1:0")
	// The default listen address may be taken here; a later listen line wins.
	s = strings.ReplaceAll(s, "healthswitch {", "healthswitch {\n        listen 127.0.0.1:0")
	s = reBlockKey.ReplaceAllStringFunc(s, func(keys string) string {
		var out []string
		for _, k := range strings.Fields(strings.TrimSuffix(keys, "{")) {
			out = append(out, rePort.ReplaceAllString(k, "")+":0")
		}
		return strings.Join(out, " ") + " {"
	})
	return s
}

// corefileBlocks returns the ~~~ corefile examples of a README.
func corefileBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	parts := strings.Split(string(b), "~~~ corefile\n")
	for _, p := range parts[1:] {
		end := strings.Index(p, "~~~")
		if end < 0 {
			t.Fatalf("%s: unclosed corefile block", path)
		}
		blocks = append(blocks, p[:end])
	}
	return blocks
}

// Every Corefile we ship or document starts, so the docs cannot rot.
func TestShippedCorefilesStart(t *testing.T) {
	cases := map[string]string{}
	for i, b := range corefileBlocks(t, "../plugin/healthswitch/README.md") {
		cases["README example "+string(rune('1'+i))] = b
	}
	files, _ := filepath.Glob("../corefile/*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cases[filepath.Base(f)] = string(b)
	}
	if len(cases) < 5 {
		t.Fatalf("found only %d Corefiles to check", len(cases))
	}
	for name, corefile := range cases {
		t.Run(name, func(t *testing.T) {
			s := corednstest.Start(t, localize(t, corefile))
			s.Stop()
		})
	}
}
