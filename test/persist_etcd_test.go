package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/demo"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// etcdCorefile is a replica of a group sharing state through etcd at
// endpoints: east and west push reports, north is probed by each replica.
func etcdCorefile(t testing.TB, name string, endpoints []string, prefix, probe, extra string) string {
	dir := t.TempDir()
	east, west, admin := filepath.Join(dir, "east.key"), filepath.Join(dir, "west.key"), filepath.Join(dir, "admin.key")
	os.WriteFile(east, []byte(eastKey+"\n"), 0o600)
	os.WriteFile(west, []byte(westKey+"\n"), 0o600)
	os.WriteFile(admin, []byte(opKey+"\n"), 0o600)
	return `svc1.net:DNSPORT {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file ` + east + `
        }
        cluster west 127.0.0.12 {
            key_file ` + west + `
        }
        cluster north 127.0.0.13 {
            probe ` + probe + `
        }
        listen 127.0.0.1:APIPORT
        admin_key_file ` + admin + `
        stale 60s
        interval 300ms
        timeout 250ms
        fall 3
` + extra + `
        store etcd ` + strings.Join(endpoints, " ") + ` {
            prefix ` + prefix + `
            replica ` + name + `
            timeout 1s
        }
    }
}
`
}

// startEtcdReplicas starts n replicas sharing prefix on etcd.
func startEtcdReplicas(t testing.TB, n int, endpoints []string, prefix, probe, extra string) []*replica {
	var rs []*replica
	for i := range n {
		name := fmt.Sprintf("r%d", i+1)
		r := newReplica(t, name, etcdCorefile(t, name, endpoints, prefix, probe, extra))
		r.start()
		rs = append(rs, r)
	}
	for _, r := range rs {
		waitFor(t, 15*time.Second, r.name+" to answer", answering(r.api, r.dns))
	}
	return rs
}

// everyReplica waits until every replica answers svc1.net with want.
func everyReplica(t testing.TB, rs []*replica, within time.Duration, what, want string) {
	t.Helper()
	for _, r := range rs {
		waitFor(t, within, r.name+": "+what, func() bool { return answerSet(r.dns, "svc1.net.") == want })
	}
}

// answerOf is answerSet, asked again on a timeout (a loaded machine can
// lose a UDP query; only a wrong answer is wrong).
func answerOf(r *replica) string {
	got := answerSet(r.dns, "svc1.net.")
	for i := 0; i < 3 && strings.HasPrefix(got, "error"); i++ {
		got = answerSet(r.dns, "svc1.net.")
	}
	return got
}

// checkAnswers fails on any answer outside allowed.
func checkAnswers(t testing.TB, who string, got []string, allowed ...string) {
	t.Helper()
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for i, a := range got {
		if !ok[a] {
			t.Errorf("%s: answer %d of %d is %q, want one of %q", who, i, len(got), a, allowed)
			return
		}
	}
}

// Issue 10 with a real 3-member etcd cluster and 3 real CoreDNS replicas:
// drains and reports through one replica move all three; a restarted
// replica answers from the shared state from its first answer; a replay
// to another replica is refused; the store rides out a leader election and
// the loss of every member, and replicas converge when etcd is back,
// without a restart.
func TestEtcdReplicasShareState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and three CoreDNS replicas")
	}
	etcd := testutil.StartEtcd(t, 3)
	app, err := demo.StartApp("north", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	prefix := fmt.Sprintf("/hs-%d", os.Getpid())
	rs := startEtcdReplicas(t, 3, etcd.Endpoints(), prefix, app.HealthURL(), "")
	r1, r2, r3 := rs[0], rs[1], rs[2]

	east, west := newPusher("east", eastKey), newPusher("west", westKey)
	if code, err := east.push(r1.api, true); code != 204 {
		t.Fatalf("east report: %d %v", code, err)
	}
	if code, err := west.push(r1.api, true); code != 204 {
		t.Fatalf("west report: %d %v", code, err)
	}
	everyReplica(t, rs, 5*time.Second, "every cluster up", "127.0.0.11 127.0.0.12 127.0.0.13")

	// A drain through replica 1: all three stop answering west.
	if code, err := drainRequest("drain", "west", time.Now()).send(r1.api); code != 200 {
		t.Fatalf("drain: %d %v", code, err)
	}
	everyReplica(t, rs, 5*time.Second, "west drained", "127.0.0.11 127.0.0.13")
	// East goes down through replica 1.
	if code, err := east.push(r1.api, false); code != 204 {
		t.Fatalf("east down: %d %v", code, err)
	}
	everyReplica(t, rs, 5*time.Second, "east down", "127.0.0.13")

	// kill -9 replica 2 and start it again: from its first answer on,
	// neither the drained cluster nor the down one.
	r2.kill()
	stop := make(chan struct{})
	answers := queryLoop(r2.dns, "svc1.net.", 0, stop)
	r2.start()
	waitFor(t, 15*time.Second, "r2 back", answering(r2.api, r2.dns))
	time.Sleep(500 * time.Millisecond) // keep asking a while: probes decide, the watch runs
	close(stop)
	got := <-answers
	if len(got) < 20 {
		t.Fatalf("only %d answers from r2 after its restart", len(got))
	}
	checkAnswers(t, "r2 after kill -9", got, "127.0.0.13")
	t.Logf("r2: %d answers after kill -9, every one north only", len(got))

	// A report accepted by replica 1, replayed to replica 3: 409.
	up := reportRequest(t, "east", eastKey, "b9", 1, true)
	if code, err := up.send(r1.api); code != 204 {
		t.Fatalf("east up through r1: %d %v", code, err)
	}
	if code, err := up.send(r3.api); code != 409 {
		t.Errorf("the same report replayed to r3: %d %v, want 409", code, err)
	}
	everyReplica(t, rs, 5*time.Second, "east up again", "127.0.0.11 127.0.0.13")

	// Every replica is in presence/ with its epoch.
	waitFor(t, 10*time.Second, "three replicas in r1's status", func() bool {
		st, err := r1.status()
		return err == nil && st.Store != nil && st.Store.Connected && len(st.Store.Replicas) == 3
	})
	if st, _ := r1.status(); len(st.Store.PerReplica) == 0 || st.Store.PerReplica[0] != "probes" {
		t.Errorf("status does not say probes are per replica: %+v", st.Store)
	}

	// Kill the etcd leader while every replica is asked in a loop: after the
	// election a report through replica 1 reaches all three; no answer in
	// between is wrong.
	stop = make(chan struct{})
	var loops []<-chan []string
	for _, r := range rs {
		loops = append(loops, queryLoop(r.dns, "svc1.net.", 2*time.Millisecond, stop))
	}
	leader := etcd.KillLeader()
	waitFor(t, 10*time.Second, "a new etcd leader", func() bool { l := etcd.Leader(); return l >= 0 && l != leader })
	b9 := uint64(2)
	waitFor(t, 15*time.Second, "a report through r1 on every replica after the election", func() bool {
		// Each try is a fresh report: one that only r1 applied (etcd not
		// yet writable) is followed by one that reaches etcd.
		b9++
		if code, _ := reportRequest(t, "east", eastKey, "b9", b9, b9%2 == 1).send(r1.api); code != 204 {
			return false
		}
		want := "127.0.0.13"
		if b9%2 == 1 {
			want = "127.0.0.11 127.0.0.13"
		}
		for _, r := range rs {
			ok := false
			for range 100 {
				if ok = answerSet(r.dns, "svc1.net.") == want; ok {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !ok {
				return false
			}
		}
		return true
	})
	close(stop)
	for i, l := range loops {
		checkAnswers(t, rs[i].name+" during the election", <-l, "127.0.0.13", "127.0.0.11 127.0.0.13")
	}
	etcd.Restart(leader)
	etcd.WaitHealthy(15 * time.Second)
	if code, err := east.push(r1.api, true); code != 204 {
		t.Fatalf("east up: %d %v", code, err)
	}
	everyReplica(t, rs, 5*time.Second, "east up after the election", "127.0.0.11 127.0.0.13")

	// Every etcd member gone: replicas keep answering from memory and
	// follow their own probes; status and metrics say the store is away.
	etcd.StopAll()
	for _, r := range rs {
		waitFor(t, 10*time.Second, r.name+" to see etcd gone", func() bool {
			st, err := r.status()
			return err == nil && st.Store != nil && !st.Store.Connected && st.Store.LastError != ""
		})
	}
	waitFor(t, 5*time.Second, "r3's metric to say etcd is gone", func() bool {
		return strings.Contains(metrics(t, &realServer{metrics: r3.metrics}), `coredns_healthswitch_store_connected{kind="etcd"} 0`)
	})
	for _, r := range rs {
		if got := answerOf(r); got != "127.0.0.11 127.0.0.13" {
			t.Errorf("%s with etcd gone: %q", r.name, got)
		}
	}
	app.SetFailing(true)
	everyReplica(t, rs, 5*time.Second, "north down by its own probe, etcd gone", "127.0.0.11")
	app.SetFailing(false)
	everyReplica(t, rs, 5*time.Second, "north up by its own probe, etcd gone", "127.0.0.11 127.0.0.13")

	// A report through r1 meanwhile is applied there at once, and only there.
	start := time.Now()
	if code, err := east.push(r1.api, false); code != 204 {
		t.Fatalf("east down through r1, etcd gone: %d %v", code, err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a report with etcd gone took %s: it should not wait for etcd", d)
	}
	if got := answerOf(r1); got != "127.0.0.13" {
		t.Errorf("r1 after a local report, etcd gone: %q", got)
	}
	if got := answerOf(r2); got != "127.0.0.11 127.0.0.13" {
		t.Errorf("r2 after r1's local report, etcd gone: %q", got)
	}
	if m := metrics(t, &realServer{metrics: r1.metrics}); !strings.Contains(m, `coredns_healthswitch_store_errors_total{op="cas_fence"}`) {
		t.Errorf("r1 does not count the report it could not store:\n%s", grepLines(m, "store_"))
	}

	// etcd back: replicas reconnect and converge, no restart.
	etcd.StartAll()
	for _, r := range rs {
		waitFor(t, 20*time.Second, r.name+" reconnected", func() bool {
			st, err := r.status()
			return err == nil && st.Store != nil && st.Store.Connected
		})
	}
	if code, err := drainRequest("undrain", "west", time.Now()).send(r1.api); code != 200 {
		t.Fatalf("undrain: %d %v", code, err)
	}
	if code, err := east.push(r1.api, true); code != 204 {
		t.Fatalf("east report through r1: %d %v", code, err)
	}
	if code, err := west.push(r2.api, true); code != 204 {
		t.Fatalf("west report through r2: %d %v", code, err)
	}
	everyReplica(t, rs, 10*time.Second, "converged after etcd came back", "127.0.0.11 127.0.0.12 127.0.0.13")
}
