package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
	"github.com/healthswitch/healthswitch/sidecar"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hs-sidecar-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "healthswitch-sidecar")
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v-test", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeFiles(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k.key"), []byte("main-test-key-0123456789abcdef\n"), 0o600)
	path := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKeygen(t *testing.T) {
	out, err := exec.Command(binary, "keygen").Output()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out)))
	if err != nil || len(raw) != 32 {
		t.Errorf("keygen printed %q: %d bytes, %v", out, len(raw), err)
	}
	// What keygen prints is a valid key file.
	key := filepath.Join(t.TempDir(), "k")
	os.WriteFile(key, out, 0o600)
	if _, err := sidecar.Parse([]byte("cluster: a\nkey_file: "+key+"\nreport_to: [http://127.0.0.1:1]\nchecks: [{name: t, exec: {command: [\"true\"]}}]"), ""); err != nil {
		t.Error(err)
	}
}

func TestCheckCommand(t *testing.T) {
	// A 2 s interval (timeout 1.6 s): the test reads the command's table and
	// exit code, and an exec run under a loaded make test (race detector,
	// other packages) once took 500 ms, past the default 80 ms timeout.
	head := "cluster: east\nkey_file: k.key\nreport_to: [http://127.0.0.1:1]\ninterval: 2s\nchecks:\n"
	tests := []struct {
		name   string
		checks string
		code   int
		want   []string
		absent []string
	}{
		{"all pass", `  - {name: ok, exec: {command: ["true"]}}`, 0,
			[]string{"NAME", "ok    exec  true      ok", "exit 0"}, nil},
		{"critical fails", "  - {name: ok, exec: {command: [\"true\"]}}\n  - {name: bad, exec: {command: [\"false\"]}}", 1,
			[]string{"bad   exec  true      FAIL", "false exited 1, want 0"}, nil},
		{"only non-critical fails", `  - {name: soft, exec: {command: ["false"]}, critical: false}`, 0,
			[]string{"soft  exec  false     FAIL"}, nil},
		{"bad config", `  - {name: bad, exec: {}}`, 2,
			[]string{"checks[0] (bad): exec: command: required"}, nil},
		// The URL is quoted back by the HTTP client's error; its secrets are not.
		{"secrets in a failing URL", `  - {name: web, http: {url: "http://admin:hunter2@127.0.0.1:1/healthz?token=t0k3n"}}`, 1,
			[]string{"web   http  true      FAIL", "http://admin:xxxxx@127.0.0.1:1/healthz?token=xxxxx", "connection refused"},
			[]string{"hunter2", "t0k3n"}},
		{"secrets in a config error", `  - {name: web, http: {url: "ftp://admin:hunter2@h/"}}`, 2,
			[]string{`"ftp://admin:xxxxx@h/": not an http:// or https:// URL`}, []string{"hunter2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, "check", "-config", writeFiles(t, head+tc.checks+"\n"))
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.absent {
				if bytes.Contains(out, []byte(w)) {
					t.Errorf("output shows %q:\n%s", w, out)
				}
			}
		})
	}
}

// `check` validates the whole config, as the service would use it, before
// running anything: a bad listen address or a fall no one means is exit 2.
func TestCheckCommandValidates(t *testing.T) {
	head := "cluster: east\nkey_file: k.key\nreport_to: [http://127.0.0.1:1]\n"
	check := "checks:\n  - {name: ok, exec: {command: [\"true\"]}}\n"
	tests := []struct {
		name, config string
		code         int
		want         string
	}{
		{"listen port out of range", head + "listen: 127.0.0.1:99999\n" + check, 2, `listen: "127.0.0.1:99999": port "99999" is not a number in 0-65535`},
		{"listen without port", head + "listen: localhost\n" + check, 2, `listen: "localhost": address localhost: missing port in address`},
		{"fall of a billion", head + "checks:\n  - {name: ok, exec: {command: [\"true\"]}, fall: 1000000000}\n", 2, "checks[0] (ok): fall 1000000000: must be between 1 and 100"},
		{"interval too short", head + "interval: 1ms\n" + check, 2, "interval: 1ms is out of range [10ms, 1h0m0s]"},
		{"heartbeat not a duration", head + "heartbeat: soon\n" + check, 2, `heartbeat: "soon" is not a duration (e.g. 100ms, 2s)`},
		{"all valid", head + "listen: '[::1]:9100'\ninterval: 2s\nheartbeat: 1s\n" + check, 0, "ok    exec  true      ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, "check", "-config", writeFiles(t, tc.config))
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tc.code || !bytes.Contains(out, []byte(tc.want)) {
				t.Errorf("exit %d, want %d and output containing %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
}

// An exec check whose command exits 0 but leaves children behind, one holding
// its stdout and one that left with setsid, passes at once, and when `check`
// returns neither child is in the process table.
func TestCheckCommandExecLeavesNothing(t *testing.T) {
	testutil.Need(t, "setsid")
	marker := fmt.Sprintf("%d.%d", 2000, os.Getpid())
	script := fmt.Sprintf("sleep %s & setsid sleep %s & echo started", marker, marker)
	path := writeFiles(t, "cluster: east\nkey_file: k.key\nreport_to: [http://127.0.0.1:1]\nchecks:\n  - {name: ready, exec: {command: [sh, -c, '"+script+"'], expect_output: started}, timeout: 5s, interval: 10s}\n")
	start := time.Now()
	cmd := exec.Command(binary, "check", "-config", path)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 0 || !bytes.Contains(out, []byte("ready  exec  true      ok")) || !bytes.Contains(out, []byte("exit 0")) {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("check took %s: it waited for the children", took)
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if cmdline, err := os.ReadFile(d + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte("sleep\x00"+marker)) {
			t.Errorf("left running: %s %q", d, cmdline)
		}
	}
}

// A key file others can read works, with a warning that says how to fix it.
func TestCheckCommandWarnsOnKeyFileMode(t *testing.T) {
	path := writeFiles(t, "cluster: east\nkey_file: k.key\nreport_to: [http://127.0.0.1:1]\nchecks:\n  - {name: ok, exec: {command: [\"true\"]}}\n")
	key := filepath.Join(filepath.Dir(path), "k.key")
	for _, tc := range []struct {
		mode os.FileMode
		warn string
	}{
		{0o600, ""},
		{0o640, "k.key is readable or writable by group or others (mode 0640); chmod 600 " + key},
		{0o644, "(mode 0644)"},
	} {
		if err := os.Chmod(key, tc.mode); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "check", "-config", path)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		switch {
		case err != nil:
			t.Errorf("mode %04o: %v\n%s%s", tc.mode, err, stdout.String(), stderr.String())
		case tc.warn == "" && stderr.Len() > 0:
			t.Errorf("mode %04o: stderr %q", tc.mode, stderr.String())
		case tc.warn != "" && (!strings.Contains(stderr.String(), "warning: key_file: ") || !strings.Contains(stderr.String(), tc.warn)):
			t.Errorf("mode %04o: stderr %q, want a warning containing %q", tc.mode, stderr.String(), tc.warn)
		}
	}
}

// syncBuffer collects a child's stderr for the test to read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func statusChecks(addr string) int {
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var st sidecar.Status
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return -1
	}
	return len(st.Checks)
}

func TestRunReloadStop(t *testing.T) {
	var reports sync.WaitGroup
	reports.Add(1)
	var once sync.Once
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		once.Do(reports.Done)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	head := "cluster: east\nkey_file: k.key\nreport_to: [" + recv.URL + "]\nlisten: " + addr + "\nchecks:\n  - {name: one, exec: {command: [\"true\"]}, interval: 200ms}\n"
	path := writeFiles(t, head)
	var stderr syncBuffer
	cmd := exec.Command(binary, "-config", path)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	testutil.WaitFor(t, 5*time.Second, "status shows 1 check", func() bool { return statusChecks(addr) == 1 })
	reports.Wait()

	// A bad config keeps the old one running, and the log says why.
	os.WriteFile(path, []byte(head+"  - {name: two, exec: {command: []}}\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 5*time.Second, "reload failure logged", func() bool {
		return strings.Contains(stderr.String(), "reload failed; keeping the running config") &&
			strings.Contains(stderr.String(), "checks[1] (two): exec: command: required")
	})
	if n := statusChecks(addr); n != 1 {
		t.Errorf("%d checks after a bad reload, want 1", n)
	}

	os.WriteFile(path, []byte(head+"  - {name: two, exec: {command: [\"true\"]}}\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 5*time.Second, "status shows 2 checks", func() bool { return statusChecks(addr) == 2 })

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`healthswitch_sidecar_build_info{version="v-test"} 1`, `healthswitch_sidecar_reloads_total{result="error"} 1`, `healthswitch_sidecar_reloads_total{result="ok"} 1`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(exitBound + time.Second):
		t.Fatalf("did not stop within %s", exitBound)
	}
	t.Logf("stopped in %s", time.Since(start))
	if !strings.Contains(stderr.String(), "sidecar stopped") {
		t.Errorf("log:\n%s", stderr.String())
	}
}

// A failing check's detail travels in every report to every DNS server, and
// from there to its status page: the secrets of the check's URL stay home.
func TestReportDetailRedacted(t *testing.T) {
	details := make(chan string, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rep, err := report.Decode(body)
		if err == nil && len(rep.Checks) == 1 && !rep.Checks[0].Healthy {
			select {
			case details <- string(body):
			default:
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	// The push target's own credentials are not logged either.
	target := strings.Replace(recv.URL, "http://", "http://push:hunter2@", 1)
	path := writeFiles(t, "cluster: east\nkey_file: k.key\nreport_to: ["+target+"]\nlisten: 127.0.0.1:"+fmt.Sprint(testutil.FreePort(t))+
		"\nchecks:\n  - {name: web, http: {url: \"http://admin:hunter2@127.0.0.1:1/healthz?api_key=t0k3n\"}, interval: 200ms}\n")
	cmd := exec.Command(binary, "-config", path)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var body string
	select {
	case body = <-details:
	case <-time.After(10 * time.Second):
		t.Fatalf("no report with a failing check; log:\n%s", stderr.String())
	}
	if !strings.Contains(body, "http://admin:xxxxx@127.0.0.1:1/healthz?api_key=xxxxx") || strings.Contains(body, "hunter2") || strings.Contains(body, "t0k3n") {
		t.Errorf("report body: %s", body)
	}
	if log := stderr.String(); strings.Contains(log, "hunter2") || strings.Contains(log, "t0k3n") || !strings.Contains(log, "push:xxxxx@127.0.0.1") {
		t.Errorf("log shows a secret, or not the target:\n%s", log)
	}
}
