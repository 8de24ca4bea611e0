package test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// checkedServer is an HTTP server a sidecar checks; kill and revive it on
// the same address.
type checkedServer struct {
	addr string
	srv  *http.Server
}

func (c *checkedServer) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ReadHeaderTimeout: time.Second}
	go c.srv.Serve(ln)
}

func (c *checkedServer) kill() { c.srv.Close() }

// startSidecarBinary runs the built sidecar for one cluster, checking url.
func startSidecarBinary(t *testing.T, bin, cluster, key, api, url string) {
	t.Helper()
	startSidecarChecksOn(t, bin, cluster, key, api, fmt.Sprintf("  - {name: web, http: {url: '%s'}}\n", url), "127.0.0.1:0")
}

// startSidecarOn is startSidecarBinary with its own API (/status, /metrics)
// on listen.
func startSidecarOn(t *testing.T, bin, cluster, key, api, url, listen string) {
	t.Helper()
	startSidecarChecksOn(t, bin, cluster, key, api, fmt.Sprintf("  - {name: web, http: {url: '%s'}}\n", url), listen)
}

// startSidecarChecks runs the built sidecar for one cluster with the YAML
// list of checks given.
func startSidecarChecks(t testing.TB, bin, cluster, key, api, checks string) {
	t.Helper()
	startSidecarChecksOn(t, bin, cluster, key, api, checks, "127.0.0.1:0")
}

// startSidecarChecksOn is startSidecarChecks with the sidecar's own API on
// listen.
func startSidecarChecksOn(t testing.TB, bin, cluster, key, api, checks, listen string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k.key"), []byte(key+"\n"), 0o600)
	cfg := fmt.Sprintf("cluster: %s\nkey_file: k.key\nreport_to: [%s]\nlisten: %s\nchecks:\n%s", cluster, api, listen, checks)
	path := filepath.Join(dir, "sidecar.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	testutil.StartLogged(t, "sidecar "+cluster, exec.Command(bin, "-config", path))
}

// The whole path with real binaries: a sidecar checks a server every
// 100 ms and pushes to bin/coredns; the server is killed, the DNS answer
// loses that cluster; the server comes back, and so does the cluster.
func TestSidecarEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the sidecar and coredns binaries")
	}
	s := realCoreDNS(t, pushCorefile(t, ""))
	bin := buildSidecar(t)
	east, west := &checkedServer{addr: "127.0.0.1:0"}, &checkedServer{addr: "127.0.0.1:0"}
	east.start(t)
	west.start(t)
	defer east.kill()
	defer west.kill()
	startSidecarBinary(t, bin, "east", eastKey, s.api, "http://"+east.addr+"/healthz")
	startSidecarBinary(t, bin, "west", westKey, s.api, "http://"+west.addr+"/healthz")

	both, westOnly := "127.0.0.11 127.0.0.12", "127.0.0.12"
	waitFor(t, 5*time.Second, "both clusters answered", func() bool { return answerSet(s.dns, "svc1.net.") == both })

	east.kill()
	killed := time.Now()
	waitFor(t, 2*time.Second, "east removed from the answer", func() bool { return answerSet(s.dns, "svc1.net.") == westOnly })
	t.Logf("server killed to DNS answer switched: %s", time.Since(killed).Round(time.Millisecond))
	if got := answerSet(s.dns, "svc2.net."); got != westOnly {
		t.Errorf("svc2.net. after east failed: %q", got)
	}

	east.start(t)
	back := time.Now()
	waitFor(t, 3*time.Second, "east back in the answer", func() bool { return answerSet(s.dns, "svc1.net.") == both })
	t.Logf("server back to DNS answer restored: %s (rise 2)", time.Since(back).Round(time.Millisecond))
}
