package sidecar

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

func fixture(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPodsPreset(t *testing.T) {
	crictl := fixture(t, "fixture-crictl")
	tests := []struct {
		scenario   string
		containers string
		healthy    bool
		why        string
	}{
		{"running", "", true, "2 containers running"},
		{"running", "[web, api]", true, "2 containers running"},
		{"restarted", "", true, "2 containers running"},
		{"exited", "", false, "container web (pod web-6d4cf56db6-8xk2p) is Exited"},
		{"exited", "[api]", true, "running"},
		{"exited", "[web]", false, "container web (pod web-6d4cf56db6-8xk2p) is Exited"},
		{"running", "[db]", false, "container db not found"},
		{"empty", "", false, "no containers listed"},
		{"json", "", false, "container web (pod web-6d4cf56db6-8xk2p) is CONTAINER_EXITED"},
		{"json", "[api]", true, "running"},
		{"down", "", false, "exited 1: time="},
	}
	for _, tc := range tests {
		t.Run(tc.scenario+" "+tc.containers, func(t *testing.T) {
			spec := "preset: pods\npods: {command: [" + crictl + ", " + tc.scenario + ", ps, -a]"
			if tc.containers != "" {
				spec += ", containers: " + tc.containers
			}
			expect(t, newCheck(t, spec+"}"), tc.healthy, tc.why)
		})
	}
}

func TestParseCrictlColumns(t *testing.T) {
	out, err := exec.Command(fixture(t, "fixture-crictl"), "restarted").Output()
	if err != nil {
		t.Fatal(err)
	}
	list, err := parseCrictl(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []container{
		{Name: "web", Pod: "web-6d4cf56db6-8xk2p", State: "Running", Attempt: 1},
		{Name: "web", Pod: "web-6d4cf56db6-8xk2p", State: "Exited", Attempt: 0},
		{Name: "api", Pod: "api-5b8d9c7f4-q7w8e", State: "Running", Attempt: 0},
	}
	if len(list) != len(want) {
		t.Fatalf("parsed %+v", list)
	}
	for i := range want {
		if list[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, list[i], want[i])
		}
	}
}

func TestCRIOPreset(t *testing.T) {
	systemctl := fixture(t, "fixture-systemctl")
	tests := []struct {
		scenario string
		healthy  bool
		why      string
	}{
		{"running", true, "crio active (running)"},
		{"inactive", false, "crio is inactive (dead)"},
		{"failed", false, "crio is failed (Result: exit-code)"},
		{"activating", false, "crio is activating (auto-restart)"},
		{"is-active", true, "crio active"},
		{"missing", false, "crio: no Active: line"},
	}
	for _, tc := range tests {
		t.Run(tc.scenario, func(t *testing.T) {
			c := newCheck(t, "preset: crio\ncrio: {command: ["+systemctl+", "+tc.scenario+", status, crio]}")
			expect(t, c, tc.healthy, tc.why)
		})
	}
	if c := newCheck(t, "preset: crio\ncrio: {unit: containerd}"); strings.Join(c.CRIO.Command, " ") != "systemctl status --no-pager --lines=0 containerd" {
		t.Errorf("default command = %v", c.CRIO.Command)
	}
}

func TestOVSPresetFakeProc(t *testing.T) {
	proc := t.TempDir()
	write := func(pid, cmdline string) {
		os.MkdirAll(filepath.Join(proc, pid), 0o755)
		os.WriteFile(filepath.Join(proc, pid, "cmdline"), []byte(cmdline), 0o644)
	}
	write("1", "/sbin/init\x00")
	write("77", "") // a kernel thread: empty cmdline
	os.MkdirAll(filepath.Join(proc, "self"), 0o755)
	c := newCheck(t, "preset: ovs\novs: {proc: "+proc+"}")
	expect(t, c, false, "ovs-vswitchd is not running")
	write("812", "ovs-vswitchd\x00--pidfile\x00--detach\x00")
	expect(t, c, false, "ovs-vswitchd is running but without db.sock")
	write("813", "/usr/sbin/ovs-vswitchd\x00unix:/var/run/openvswitch/db.sock\x00-vconsole:emer\x00--pidfile\x00")
	expect(t, c, true, "ovs-vswitchd running as pid 813")
	expect(t, c, true, "ovs-vswitchd running as pid 813") // from the remembered pid
	os.RemoveAll(filepath.Join(proc, "813"))
	expect(t, c, false, "ovs-vswitchd is running but without db.sock")
}

// A real process named ovs-vswitchd with a db.sock argument, found in the
// real /proc.
func TestOVSPresetRealProc(t *testing.T) {
	sock := "unix:/tmp/hs-test-" + randomHex(4) + "/db.sock"
	c := newCheck(t, "preset: ovs\novs: {match: '"+sock+"'}")
	expect(t, c, false, "not running")
	// sh with argv[0] set to ovs-vswitchd; "; :" keeps sh from exec'ing sleep.
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"ovs-vswitchd", "-c", "sleep 30; :", "x", sock}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() }()
	testutil.WaitFor(t, 2*time.Second, "ovs check passes", func() bool { return c.Run(t.Context()).Healthy })
}

func TestVMPreset(t *testing.T) {
	testutil.Need(t, "virsh")
	tests := []struct {
		name    string
		spec    string
		healthy bool
		why     string
	}{
		{"every domain", `{uri: "test:///default"}`, true, "1 domains running"},
		{"named domain running", `{uri: "test:///default", domains: [test]}`, true, "1 domains running"},
		{"named domain missing", `{uri: "test:///default", domains: [test, worker-2]}`, false, "domain worker-2 not found"},
		{"bad uri", `{uri: "nosuchdriver:///x"}`, false, "libvirt nosuchdriver:///x via /var/run/libvirt/libvirt-sock"},
		{"virsh", `{uri: "nosuchdriver:///x", command: [virsh, -c, "nosuchdriver:///x", list, --all]}`, false, "virsh exited 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCheck(t, "preset: vm\nvm: "+tc.spec+"\ninterval: 5s")
			expect(t, c, tc.healthy, tc.why)
		})
	}
}

func TestParseVirshList(t *testing.T) {
	out := " Id   Name       State\n---------------------------\n 1    worker-1   running\n 2    worker-2   paused\n -    spare      shut off\n\n"
	got := parseVirshList([]byte(out))
	want := map[string]string{"worker-1": "running", "worker-2": "paused", "spare": "shut off"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	c := newCheck(t, "preset: vm\nvm: {command: [printf, '"+strings.ReplaceAll(out, "\n", `\n`)+"'], domains: [worker-1, spare]}")
	expect(t, c, false, "domain spare is shut off")
}

// netns creates a network namespace for the test and returns the argv
// prefix that runs a command inside it.
func netns(t *testing.T) []string {
	t.Helper()
	testutil.NeedRoot(t)
	testutil.Need(t, "ip")
	name := "hs-test-" + randomHex(4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testutil.Missing(t, "cannot create a network namespace: "+strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	return []string{"ip", "netns", "exec", name}
}

func inNS(t *testing.T, ns []string, args ...string) {
	t.Helper()
	argv := append(append([]string{}, ns...), args...)
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out)
	}
}

func yamlList(argv []string) string { return "[" + strings.Join(argv, ", ") + "]" }

func TestNFTablesPresetInNetns(t *testing.T) {
	testutil.Need(t, "nft")
	ns := netns(t)
	c := newCheck(t, "preset: nftables\nnftables: {command: "+yamlList(append(ns, "nft", "list", "ruleset"))+"}\ninterval: 5s")
	strict := newCheck(t, "preset: nftables\nnftables: {min_rules: 1, command: "+yamlList(append(ns, "nft", "list", "ruleset"))+"}\ninterval: 5s")
	expect(t, c, false, "nftables ruleset is empty")
	inNS(t, ns, "nft", "add table inet hs")
	inNS(t, ns, "nft", "add chain inet hs input { type filter hook input priority 0; policy accept; }")
	expect(t, c, true, "1 tables, 0 rules")
	expect(t, strict, false, "0 nftables rules, want at least 1")
	inNS(t, ns, "nft", "add rule inet hs input tcp dport 22 accept")
	expect(t, strict, true, "1 tables, 1 rules")
	inNS(t, ns, "nft", "flush ruleset")
	expect(t, c, false, "nftables ruleset is empty")
}

func TestIPTablesPresetInNetns(t *testing.T) {
	testutil.Need(t, "iptables")
	ns := netns(t)
	c := newCheck(t, "preset: iptables\niptables: {command: "+yamlList(append(ns, "iptables", "-S"))+"}\ninterval: 5s")
	expect(t, c, false, "0 iptables rules, want at least 1")
	inNS(t, ns, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	inNS(t, ns, "iptables", "-A", "FORWARD", "-j", "DROP")
	expect(t, c, true, "2 rules")
	inNS(t, ns, "iptables", "-F")
	expect(t, c, false, "0 iptables rules")
}
