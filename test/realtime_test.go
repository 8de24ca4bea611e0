package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/demo"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// sidecarStatus is the part of the sidecar's /status these tests read.
type sidecarStatus struct {
	Checks []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"checks"`
	Scheduling *struct {
		Policy   string `json:"policy"`
		Priority int    `json:"priority"`
		Want     int    `json:"want"`
		Error    string `json:"error"`
	} `json:"scheduling"`
}

func getSidecarStatus(listen string) (sidecarStatus, error) {
	var st sidecarStatus
	resp, err := http.Get("http://" + listen + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// threadPolicies is "rt_priority policy" of every thread of pid, by
// thread id.
func threadPolicies(t *testing.T, pid int) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, task := range tasks {
		if pol, err := threadPolicy(pid, task.Name()); err == nil { // else it exited
			out[task.Name()] = pol
		}
	}
	return out
}

// threadPolicy is "rt_priority policy" of one thread, fields 40 and 41 of
// its /proc stat line.
func threadPolicy(pid int, tid string) (string, error) {
	f, err := demo.StatFields(fmt.Sprintf("/proc/%d/task/%s/stat", pid, tid))
	if err != nil {
		return "", err
	}
	if len(f) < 39 {
		return "", fmt.Errorf("thread %s: %d stat fields", tid, len(f))
	}
	return f[37] + " " + f[38], nil // the first field here is field 3
}

// realtimeConfig is a sidecar config at realtime priority prio, with one
// exec check whose command writes its own "rt_priority policy" to out.
func realtimeConfig(listen, out string, prio int) string {
	return fmt.Sprintf(`cluster: east
key_file: k.key
report_to: [http://127.0.0.1:1]
listen: %s
realtime_priority: %d
checks:
  - name: child
    exec: {command: [/bin/sh, -c, 'cut -d" " -f40,41 /proc/$$/stat > %s']}
    interval: 50ms
`, listen, prio, out)
}

// The sidecar with realtime_priority: every thread of the process runs
// SCHED_FIFO at that priority, also the threads the Go runtime starts
// afterwards; a check's command runs at the normal policy; /status and the
// metric say so; a reload to 0 puts every thread back.
func TestSidecarRealtimePriority(t *testing.T) {
	testutil.NeedRoot(t)
	bin := realBinary(t, "healthswitch-sidecar")
	dir := t.TempDir()
	out := filepath.Join(dir, "policy")
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	path := filepath.Join(dir, "sidecar.yaml")
	os.WriteFile(filepath.Join(dir, "k.key"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	os.WriteFile(path, []byte(realtimeConfig(listen, out, 10)), 0o600)

	prefix, remove, err := testutil.RealtimeCgroup(fmt.Sprintf("hs-test-rt-%d", os.Getpid()), 100000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove) // after the sidecar is gone
	argv := append(prefix, bin, "-config", path)
	cmd := exec.Command(argv[0], argv[1:]...)
	testutil.StartLoggedFile(t, "sidecar", cmd, filepath.Join(dir, "sidecar.log"))
	pid := cmd.Process.Pid // the shell runs exec: the sidecar has its pid

	testutil.WaitFor(t, 10*time.Second, "/status to say scheduling fifo 10", func() bool {
		st, err := getSidecarStatus(listen)
		return err == nil && st.Scheduling != nil && st.Scheduling.Policy == "fifo" && st.Scheduling.Priority == 10
	})
	// Every thread, over half a second of check runs (which make the
	// runtime start threads): those started later copy their starter. The
	// thread that forks a check's command leaves SCHED_FIFO for the length
	// of the fork: a thread seen at another policy must be back at it (or
	// gone) soon, never stay behind.
	seen := map[string]bool{}
	until := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(until) {
		for tid, pol := range threadPolicies(t, pid) {
			seen[tid] = true
			if pol == "10 1" {
				continue
			}
			testutil.WaitFor(t, 2*time.Second, fmt.Sprintf("thread %s of the sidecar (rt_priority and policy %q) back at \"10 1\" (SCHED_FIFO 10)", tid, pol), func() bool {
				pol, err := threadPolicy(pid, tid)
				return err != nil || pol == "10 1"
			})
		}
		time.Sleep(10 * time.Millisecond) // sampling, not waiting for a condition
	}
	os.Remove(out)
	testutil.WaitFor(t, 5*time.Second, "the exec check's command to write its policy", func() bool {
		b, err := os.ReadFile(out)
		return err == nil && len(b) > 0
	})
	if b, _ := os.ReadFile(out); strings.TrimSpace(string(b)) != "0 0" {
		t.Fatalf("the exec check's command ran with rt_priority and policy %q, want \"0 0\" (SCHED_OTHER)", strings.TrimSpace(string(b)))
	}
	if v := metricSum(scrape(t, "http://"+listen+"/metrics"), "healthswitch_sidecar_realtime_priority"); v != 10 {
		t.Fatalf("healthswitch_sidecar_realtime_priority %g, want 10", v)
	}

	// A reload to 0: back to the normal policy, every thread.
	os.WriteFile(path, []byte(realtimeConfig(listen, out, 0)), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, "every thread back at SCHED_OTHER after the reload", func() bool {
		for _, pol := range threadPolicies(t, pid) {
			if pol != "0 0" {
				return false
			}
		}
		return true
	})
	if st, err := getSidecarStatus(listen); err != nil || st.Scheduling != nil {
		t.Fatalf("/status after the reload to 0: scheduling %+v (%v), want none", st.Scheduling, err)
	}
	if v := metricSum(scrape(t, "http://"+listen+"/metrics"), "healthswitch_sidecar_realtime_priority"); v != 0 {
		t.Fatalf("healthswitch_sidecar_realtime_priority %g after the reload to 0, want 0", v)
	}
}

// A sidecar that may not take real-time priority (no CAP_SYS_NICE: here
// the user nobody) runs on at the normal policy and says why, in /status,
// in the metric and in its log; its checks run.
func TestSidecarRealtimeRefused(t *testing.T) {
	testutil.NeedRoot(t)
	bin := realBinary(t, "healthswitch-sidecar")
	dir, err := os.MkdirTemp("", "hs-rt-refused-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	out := filepath.Join(dir, "policy")
	listen := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	path := filepath.Join(dir, "sidecar.yaml")
	os.WriteFile(filepath.Join(dir, "k.key"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	os.WriteFile(path, []byte(realtimeConfig(listen, out, 10)), 0o600)
	for _, f := range []string{dir, path, filepath.Join(dir, "k.key")} {
		if err := os.Chown(f, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(dir, "sidecar.log")
	cmd := exec.Command(bin, "-config", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	testutil.StartLoggedFile(t, "sidecar", cmd, logPath)

	var st sidecarStatus
	testutil.WaitFor(t, 10*time.Second, "/status to say the priority was not had, and the check to have run", func() bool {
		st, err = getSidecarStatus(listen)
		return err == nil && st.Scheduling != nil && len(st.Checks) == 1 && st.Checks[0].State == "up"
	})
	if s := st.Scheduling; s.Policy != "normal" || s.Want != 10 || !strings.Contains(s.Error, "CAP_SYS_NICE") {
		t.Fatalf("/status scheduling %+v, want policy normal, want 10 and an error naming CAP_SYS_NICE", *s)
	}
	for tid, pol := range threadPolicies(t, cmd.Process.Pid) {
		if pol != "0 0" {
			t.Fatalf("thread %s: rt_priority and policy %q, want \"0 0\"", tid, pol)
		}
	}
	if v := metricSum(scrape(t, "http://"+listen+"/metrics"), "healthswitch_sidecar_realtime_priority"); v != 0 {
		t.Fatalf("healthswitch_sidecar_realtime_priority %g, want 0", v)
	}
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "running at the normal priority") || !strings.Contains(string(b), "realtime_priority 10") {
		t.Fatalf("the log does not say the priority was refused:\n%s", b)
	}
}
