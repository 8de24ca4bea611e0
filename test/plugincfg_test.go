package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// pluginCfgLine is what a user adds to CoreDNS's plugin.cfg to compile
// healthswitch into their own build (documented in the plugin README).
const pluginCfgLine = "healthswitch:github.com/healthswitch/healthswitch/plugin/healthswitch"

// TestPluginCfgBuild builds CoreDNS v1.15.0's own source tree, taken from the
// module cache, the way its users do: the plugin.cfg line added before
// `hosts`, `go generate`, `go build`. Then it starts that binary with a
// healthswitch Corefile and asks it a question.
func TestPluginCfgBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds all of CoreDNS (minutes)")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/coredns/coredns").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/coredns/coredns: %v", err)
	}
	src := filepath.Join(t.TempDir(), "coredns")
	run(t, "", "cp", "-r", strings.TrimSpace(string(out)), src)
	run(t, "", "chmod", "-R", "u+w", src) // the module cache is read-only

	cfg := filepath.Join(src, "plugin.cfg")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nhosts:hosts\n") {
		t.Fatal("plugin.cfg of this CoreDNS has no hosts:hosts line to put healthswitch before")
	}
	b = []byte(strings.Replace(string(b), "\nhosts:hosts\n", "\n"+pluginCfgLine+"\nhosts:hosts\n", 1))
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, src, "go", "mod", "edit",
		"-require", "github.com/healthswitch/healthswitch@v0.0.0-00010101000000-000000000000",
		"-replace", "github.com/healthswitch/healthswitch="+repo)
	run(t, src, "go", "generate", "coredns.go")
	bin := filepath.Join(src, "coredns-custom")
	start := time.Now()
	run(t, src, "go", "build", "-mod=mod", "-o", bin, ".")
	t.Logf("built CoreDNS v1.15.0 with healthswitch in %s", time.Since(start).Round(time.Second))

	plugins, err := exec.Command(bin, "-plugins").Output()
	if err != nil || !strings.Contains(string(plugins), "healthswitch") {
		t.Fatalf("-plugins does not list healthswitch (%v):\n%s", err, plugins)
	}
	s := startCoreDNS(t, bin, `svc1.net:DNSPORT {
    bind 127.0.0.1
    healthswitch {
        cluster east 192.0.2.10
        listen 127.0.0.1:APIPORT
    }
}
`, freePort(t))
	r, err := realQuery(s.dns, "udp", "svc1.net.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.10" || !r.Authoritative {
		t.Fatalf("answer from the user-built CoreDNS:\n%s", r)
	}
}

// run runs a command in dir and fails the test with its output if it fails.
func run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
