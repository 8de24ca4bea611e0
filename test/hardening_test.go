package test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

const adminKey = "admin-key-0123456789abcdef"

// send posts body to url with the given signature headers, and returns
// the status code.
func send(t *testing.T, url string, body []byte, ts, sig string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set(report.HeaderTimestamp, ts)
	req.Header.Set(report.HeaderSignature, sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func clusterState(t *testing.T, api, cluster string) string {
	t.Helper()
	var st struct {
		Clusters []struct{ Name, State string }
	}
	getJSON(t, api+"/v1/status", &st)
	for _, c := range st.Clusters {
		if c.Name == cluster {
			return c.State
		}
	}
	return ""
}

// Against the real binary: an operator request applies once (the same one
// with its signature upper-cased, or one signed before the last applied,
// is 409); bodies with trailing junk, case-variant or duplicate keys are
// 400, and so is a report with "Healthy".
func TestOperatorReplayAndStrictBodies(t *testing.T) {
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.key")
	os.WriteFile(admin, []byte(adminKey+"\n"), 0o600)
	s := realCoreDNS(t, pushCorefile(t, "        admin_key_file "+admin))
	drainURL, undrainURL := s.api+"/v1/clusters/east/drain", s.api+"/v1/clusters/east/undrain"
	drain := []byte(`{"action":"drain","cluster":"east","reason":"maintenance"}`)
	signed := time.Now()
	ts, sig := report.Sign([]byte(adminKey), signed, drain)
	if code := send(t, drainURL, drain, ts, sig); code != 200 {
		t.Fatalf("drain: %d", code)
	}
	upper := "v1=" + strings.ToUpper(strings.TrimPrefix(sig, "v1="))
	if code := send(t, drainURL, drain, ts, upper); code != http.StatusUnauthorized { // only the canonical form verifies
		t.Errorf("the captured drain replayed with its signature upper-cased: %d, want 401", code)
	}
	undrain := []byte(`{"action":"undrain","cluster":"east"}`)
	ts2, sig2 := report.Sign([]byte(adminKey), signed.Add(-2*time.Second), undrain)
	if code := send(t, undrainURL, undrain, ts2, sig2); code != http.StatusConflict {
		t.Errorf("an undrain signed before the applied drain: %d, want 409", code)
	}
	if st := clusterState(t, s.api, "east"); st != "drained" {
		t.Errorf("east %s, want drained", st)
	}
	for _, b := range []string{
		`{"action":"undrain","cluster":"east"} junk`,
		`{"Action":"undrain","cluster":"east"}`,
		`{"action":"undrain","CLUSTER":"east"}`,
		`{"action":"undrain","cluster":"east","cluster":"east"}`,
	} {
		ts, sig := report.Sign([]byte(adminKey), time.Now(), []byte(b))
		if code := send(t, undrainURL, []byte(b), ts, sig); code != http.StatusBadRequest {
			t.Errorf("undrain body %s: %d, want 400", b, code)
		}
	}
	rep := report.Report{Version: 1, Cluster: "west", BootID: "b", Sequence: 1, SentAt: time.Now().UTC(), Healthy: true, IntervalMS: 100}
	good, _ := rep.Encode()
	bad := bytes.Replace(good, []byte(`"healthy"`), []byte(`"Healthy"`), 1)
	if code, err := postSigned(s.api+"/v1/report", bad, []byte(westKey), time.Now()); err != nil || code != http.StatusBadRequest {
		t.Errorf(`report with "Healthy": %d %v, want 400`, code, err)
	}
	if code, err := postSigned(s.api+"/v1/report", good, []byte(westKey), time.Now()); err != nil || code != http.StatusNoContent {
		t.Errorf("the same report spelled right: %d %v, want 204", code, err)
	}
	ts3, sig3 := report.Sign([]byte(adminKey), time.Now(), undrain)
	if code := send(t, undrainURL, undrain, ts3, sig3); code != 200 {
		t.Errorf("a fresh undrain: %d", code)
	}
}

// No credential of a probe, notify or peer URL, or of a sidecar check's
// URL, shows in /v1/status, /v1/events or the CoreDNS log.
func TestSecretsNotShown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binaries")
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer failing.Close()
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	east, west := keyFiles(t)
	probeURL := strings.Replace(failing.URL, "http://", "http://bob:probe-pw@", 1) + "/healthz?token=probe-tok"
	s := realCoreDNS(t, `svc1.net:DNSPORT svc2.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file `+east+`
            probe `+probeURL+`
            notify http://127.0.0.1:1/hook?api_key=notify-key
        }
        cluster west 127.0.0.12 {
            key_file `+west+`
        }
        peers http://peer:peer-pw@127.0.0.1:1
        listen 127.0.0.1:APIPORT
        stale 2s
    }
}
`)
	startSidecarBinary(t, buildSidecar(t), "west", westKey, s.api, "http://admin:side-pw@"+dead+"/healthz?secret=side-tok")
	waitFor(t, 10*time.Second, "east down by its probe, west by its sidecar", func() bool {
		return clusterState(t, s.api, "east") == "down" && clusterState(t, s.api, "west") == "down"
	})
	secrets := []string{"probe-pw", "probe-tok", "notify-key", "peer-pw", "side-pw", "side-tok"}
	for _, path := range []string{"/v1/status", "/v1/events"} {
		resp, err := http.Get(s.api + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "xxxxx") {
			t.Errorf("%s redacts nothing: %s", path, b)
		}
		for _, sec := range secrets {
			if strings.Contains(string(b), sec) {
				t.Errorf("%s shows %q:\n%s", path, sec, b)
			}
		}
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	log := s.log.String()
	if !strings.Contains(log, "cluster east: ") || !strings.Contains(log, "xxxxx") {
		t.Errorf("the log shows no redacted transition:\n%s", log)
	}
	for _, sec := range secrets {
		if strings.Contains(log, sec) {
			t.Errorf("the CoreDNS log shows %q", sec)
		}
	}
}

// A client beyond this host (in a network namespace, over a veth) gets
// 403 for /v1/status and /v1/events without the read key, and 200 with
// it; listening beyond loopback without tls warns at start.
func TestReadRoutesFromAnotherHost(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.Need(t, "ip", "curl")
	pid := os.Getpid()
	ns := fmt.Sprintf("hs-%d-read", pid)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	host, peer := fmt.Sprintf("hsrh%d", pid), fmt.Sprintf("hsrp%d", pid)
	run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run("ip", "link", "set", peer, "netns", ns)
	hostIP := fmt.Sprintf("10.214.%d.1", pid%250)
	run("ip", "addr", "add", hostIP+"/30", "dev", host)
	run("ip", "link", "set", host, "up")
	run("ip", "netns", "exec", ns, "ip", "addr", "add", fmt.Sprintf("10.214.%d.2/30", pid%250), "dev", peer)
	run("ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")

	readKey := filepath.Join(t.TempDir(), "read.key")
	os.WriteFile(readKey, []byte("read-key-0123456789abcdef\n"), 0o600)
	apiPort := freePort(t)
	corefile := strings.Replace(pushCorefile(t, "        read_key_file "+readKey), "listen 127.0.0.1:APIPORT", "listen 0.0.0.0:APIPORT", 1)
	s := realCoreDNSOn(t, corefile, apiPort)
	remote := func(path string, header ...string) string {
		args := []string{"ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"}
		for _, h := range header {
			args = append(args, "-H", h)
		}
		return run(append(args, fmt.Sprintf("http://%s:%d%s", hostIP, apiPort, path))...)
	}
	for _, path := range []string{"/v1/status", "/v1/events"} {
		if code := remote(path); code != "403" {
			t.Errorf("%s from another host without a key: %s, want 403", path, code)
		}
		if code := remote(path, "Authorization: Bearer wrong-key-0123456789abcdef"); code != "403" {
			t.Errorf("%s from another host with a wrong key: %s, want 403", path, code)
		}
		if code := remote(path, "Authorization: Bearer read-key-0123456789abcdef"); code != "200" {
			t.Errorf("%s from another host with the read key: %s, want 200", path, code)
		}
		resp, err := http.Get(s.api + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s from loopback: %d, want 200", path, resp.StatusCode)
		}
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	if !strings.Contains(s.log.String(), "WITHOUT tls") {
		t.Errorf("no warning for listen 0.0.0.0 without tls:\n%s", s.log)
	}
}
