package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/demo"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// appEnv, when set, makes the test binary a stand-alone application server
// on that address, so a test can kill a real process.
const appEnv = "HEALTHSWITCH_E2E_APP"

func TestMain(m *testing.M) {
	if addr := os.Getenv(appEnv); addr != "" {
		app, err := demo.StartApp("e2e", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(app.URL)
		select {} // until killed
	}
	os.Exit(m.Run())
}

const (
	eastIP, westIP = "127.0.0.11", "127.0.0.12"
	bothIPs        = eastIP + " " + westIP
	e2eHeartbeat   = 250 * time.Millisecond
)

// e2e is a running stack: the real bin/coredns and one real sidecar per
// cluster, each checking its cluster's application over HTTP.
type e2e struct {
	*demo.Stack
	r *demo.Resolver
}

// startE2E starts east and west; health[name] is the URL each sidecar
// checks, probe[name] (optional) the plugin's active probe.
func startE2E(t *testing.T, health, probe map[string]string, plugin ...string) *e2e {
	t.Helper()
	coredns, sidecar := realBinary(t, "coredns"), realBinary(t, "healthswitch-sidecar")
	opt := demo.Options{Dir: t.TempDir(), CoreDNS: coredns, Sidecar: sidecar,
		DNS:      fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		API:      fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		Zones:    []string{"svc1.net", "svc2.net"},
		Interval: 100 * time.Millisecond, Heartbeat: e2eHeartbeat, Plugin: plugin}
	for _, c := range []struct{ name, ip string }{{"east", eastIP}, {"west", westIP}} {
		opt.Clusters = append(opt.Clusters, demo.ClusterSpec{Name: c.name, IPs: []string{c.ip}, Health: health[c.name], Probe: probe[c.name]})
	}
	st, err := demo.NewStack(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Stop()
		if t.Failed() {
			t.Logf("coredns:\n%s\nsidecar east:\n%s", st.LogTail("coredns", 30), st.LogTail("sidecar-east", 30))
		}
	})
	e := &e2e{Stack: st, r: demo.NewResolver(opt.DNS)}
	e.waitState(t, 10*time.Second, "east", "up")
	e.waitState(t, 10*time.Second, "west", "up")
	e.waitAnswer(t, 5*time.Second, bothIPs)
	return e
}

func (e *e2e) waitAnswer(t *testing.T, d time.Duration, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for _, name := range []string{"svc1.net", "svc2.net"} {
		waitFor(t, d, name+" to answer "+want, func() bool { return e.r.Answer(name) == want })
	}
	return time.Since(start)
}

func (e *e2e) waitState(t *testing.T, d time.Duration, cluster, want string) {
	t.Helper()
	waitFor(t, d, cluster+" to be "+want, func() bool {
		st, err := demo.GetStatus(e.Opt.API)
		return err == nil && st.ClusterState(cluster) == want
	})
}

// lastEvent is the newest transition of cluster.
func (e *e2e) lastEvent(t *testing.T, cluster string) demo.Event {
	t.Helper()
	evs, err := demo.Events(e.Opt.API)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Cluster == cluster {
			return evs[i]
		}
	}
	t.Fatalf("no event for %s", cluster)
	return demo.Event{}
}

func startApps(t *testing.T) map[string]*demo.App {
	t.Helper()
	apps := map[string]*demo.App{}
	for _, name := range []string{"east", "west"} {
		a, err := demo.StartApp(name, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		apps[name] = a
	}
	return apps
}

func healthURLs(apps map[string]*demo.App) map[string]string {
	m := map[string]string{}
	for n, a := range apps {
		m[n] = a.HealthURL()
	}
	return m
}

// The application returns errors: the sidecar's HTTP check fails, east
// leaves the answers within a fraction of a second and comes back when the
// app recovers.
func TestE2EApplicationErrors(t *testing.T) {
	apps := startApps(t)
	e := startE2E(t, healthURLs(apps), nil)

	apps["east"].SetFailing(true)
	took := e.waitAnswer(t, 3*time.Second, westIP)
	t.Logf("east out of the answers %s after the app began failing", took)
	if ev := e.lastEvent(t, "east"); ev.To != "down" || !strings.Contains(ev.Reason, "status 500") {
		t.Errorf("event %+v, want down because of status 500", ev)
	}
	apps["east"].SetFailing(false)
	took = e.waitAnswer(t, 3*time.Second, bothIPs)
	t.Logf("east back %s after the app recovered", took)
}

// The application process is killed: its port refuses connections.
func TestE2EApplicationKilled(t *testing.T) {
	port := freePort(t)
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), appEnv+"="+fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("app process: %v", err)
	}
	west := startApps(t)["west"]
	e := startE2E(t, map[string]string{"east": strings.TrimSpace(url) + "/healthz", "west": west.HealthURL()}, nil)

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := e.waitAnswer(t, 3*time.Second, westIP)
	t.Logf("east out of the answers %s after its app was killed", took)
	if ev := e.lastEvent(t, "east"); ev.To != "down" || !strings.Contains(ev.Reason, "sidecar") {
		t.Errorf("event %+v, want down from the sidecar", ev)
	}
}

// The ingress stops answering while the sidecar inside stays happy: only
// the plugin's own probe can see it.
func TestE2EIngressUnreachable(t *testing.T) {
	apps := startApps(t)
	ingress, err := demo.StartApp("east-ingress", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ingress.Close()
	e := startE2E(t, healthURLs(apps), map[string]string{"east": ingress.HealthURL()},
		"interval 50ms", "timeout 40ms", "fall 2", "rise 2")

	ingress.Close()
	took := e.waitAnswer(t, 3*time.Second, westIP)
	t.Logf("east out of the answers %s after its ingress went away", took)
	if ev := e.lastEvent(t, "east"); ev.To != "down" || !strings.HasPrefix(ev.Reason, "probe") {
		t.Errorf("event %+v, want down from the probe", ev)
	}
}

// The sidecar is killed and nothing else watches east: once its signal is
// stale, east is out.
func TestE2ESidecarKilled(t *testing.T) {
	apps := startApps(t)
	e := startE2E(t, healthURLs(apps), nil, "stale 500ms")

	if err := e.Sidecar("east").Kill(); err != nil {
		t.Fatal(err)
	}
	took := e.waitAnswer(t, 5*time.Second, westIP)
	t.Logf("east out of the answers %s after its sidecar was killed (stale 500ms)", took)
	if ev := e.lastEvent(t, "east"); ev.To != "down" || !strings.Contains(ev.Reason, "no valid report") {
		t.Errorf("event %+v, want down as stale", ev)
	}
	if err := e.StartSidecar("east"); err != nil {
		t.Fatal(err)
	}
	e.waitAnswer(t, 5*time.Second, bothIPs)
}

// The DNS server restarts: it starts with no state, and the sidecars'
// next pushes (heartbeat 250ms) bring it back.
func TestE2EDNSServerRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the DNS server")
	}
	apps := startApps(t)
	e := startE2E(t, healthURLs(apps), nil)
	apps["east"].SetFailing(true)
	e.waitAnswer(t, 3*time.Second, westIP)

	if err := e.CoreDNS().Stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.StartCoreDNS(context.Background()); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	e.waitState(t, 5*time.Second, "east", "down")
	e.waitState(t, 5*time.Second, "west", "up")
	took := time.Since(ready)
	e.waitAnswer(t, time.Second, westIP)
	t.Logf("state back %s after the restarted server answered (heartbeat %s)", took, e2eHeartbeat)
	// One heartbeat, plus room for a loaded test machine.
	if limit := e2eHeartbeat + 350*time.Millisecond; took > limit {
		t.Errorf("state took %s to come back, want within one heartbeat (%s, limit %s)", took, e2eHeartbeat, limit)
	}
}

// demoBinDir is a folder with coredns, healthswitch-sidecar and hs-demo,
// as hs-demo -bin expects.
func demoBinDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"coredns", "healthswitch-sidecar", "hs-demo"} {
		if err := os.Symlink(realBinary(t, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// make demo-failover: the scripted run prints both timelines and exits
// with nothing left running.
func TestE2EDemoFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the scripted demo")
	}
	dir := demoBinDir(t)
	cmd := exec.Command(filepath.Join(dir, "hs-demo"), "-bin", dir, "failover")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("hs-demo failover did not finish in 60s:\n%s", out)
	}
	if err != nil {
		t.Fatalf("hs-demo failover: %v\n%s", err, out)
	}
	for _, want := range []string{"fault injected", "detected in the cluster", "report received", "answer changed", "first client query saw it", "fault removed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(string(out), "first client query saw it"); n != 2 {
		t.Errorf("%d timelines, want 2:\n%s", n, out)
	}
	t.Logf("\n%s", out)
}

// make demo: it runs, make demo-fail / demo-heal switch the answers, and
// Ctrl-C (SIGINT) leaves no process behind.
func TestE2EDemoInteractive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the interactive demo")
	}
	testutil.Need(t, "pgrep")
	for _, addr := range []string{"127.0.0.1:1053", "127.0.0.1:8053"} {
		if resp, err := http.Get("http://" + addr + "/v1/status"); err == nil {
			resp.Body.Close()
			t.Skipf("something (a running make demo?) already uses %s", addr)
		}
	}
	if _, err := os.Stat("/tmp/healthswitch-demo/demo.pid"); err == nil {
		t.Skip("a demo seems to be running (/tmp/healthswitch-demo/demo.pid)")
	}
	dir := demoBinDir(t)
	cmd := exec.Command(filepath.Join(dir, "hs-demo"), "-bin", dir, "run")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var pids []int
	var log strings.Builder
	expect := func(substr string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("demo ended before printing %q:\n%s", substr, log.String())
				}
				log.WriteString(l + "\n")
				if i := strings.Index(l, "(pid "); i >= 0 {
					pid, _ := strconv.Atoi(strings.TrimRightFunc(strings.Fields(l[i+5:])[0], func(r rune) bool { return r < '0' || r > '9' }))
					pids = append(pids, pid)
				}
				if strings.Contains(l, substr) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q in 20s:\n%s", substr, log.String())
			}
		}
	}
	expect("status page  http://127.0.0.1:8053/")
	expect("svc1.net answers 127.0.0.11 127.0.0.12")
	if resp, err := http.Get("http://127.0.0.1:8053/"); err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("the status page the demo prints: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if len(pids) != 3 {
		t.Fatalf("want 3 child pids in the banner, got %v:\n%s", pids, log.String())
	}
	ctl := func(verb string) {
		if out, err := exec.Command(filepath.Join(dir, "hs-demo"), verb, "east").CombinedOutput(); err != nil {
			t.Fatalf("hs-demo %s east: %v\n%s", verb, err, out)
		}
	}
	ctl("fail")
	expect("east down (sidecar: web: ")
	if !strings.Contains(log.String(), "→ svc1.net now answers 127.0.0.12") {
		t.Errorf("no switch line:\n%s", log.String())
	}
	ctl("heal")
	expect("east up (sidecar: healthy) → svc1.net now answers 127.0.0.11 127.0.0.12")

	cmd.Process.Signal(os.Interrupt)
	go io.Copy(io.Discard, stdout)
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	select {
	case err := <-waitDone:
		if err != nil {
			t.Errorf("demo exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo did not stop within 15s of SIGINT")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("pid %d still runs after Ctrl-C", pid)
		}
	}
	if out, err := exec.Command("pgrep", "-f", "/tmp/healthswitch-demo/").Output(); err == nil {
		t.Errorf("processes left behind:\n%s", out)
	}
}
