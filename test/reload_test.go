package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/corednstest"
)

func reloadCorefile(t *testing.T, east, west, admin string, dnsPort, apiPort int, extra string) string {
	return fmt.Sprintf(`svc1.net:%d {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file %s
        }
        cluster west 127.0.0.12 {
            key_file %s
        }
        admin_key_file %s
        listen 127.0.0.1:%d
        stale 1h
%s
    }
}
`, dnsPort, east, west, admin, apiPort, extra)
}

// Reloads, good, bad and with a new push address, while reports are pushed
// and queries served: no query fails, no report is refused for the reload,
// and state (a failed cluster, a drain) carries over.
func TestReloadKeepsServingAndState(t *testing.T) {
	east, west := keyFiles(t)
	admin := filepath.Join(t.TempDir(), "admin.key")
	os.WriteFile(admin, []byte("admin-key-0123456789"), 0o600)
	dnsPort, port1, port2 := freePort(t), freePort(t), freePort(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	api := func(p int) string { return fmt.Sprintf("http://127.0.0.1:%d", p) }

	s := corednstest.Start(t, reloadCorefile(t, east, west, admin, dnsPort, port1, ""))
	eastP := newPusher("east", eastKey)
	westP := newPusher("west", westKey)
	if code, err := eastP.push(api(port1), false); code != 204 {
		t.Fatalf("east report: %d %v", code, err)
	}
	if got := answerSet(dnsAddr, "svc1.net."); got != "127.0.0.12" {
		t.Fatalf("before reload: %q", got)
	}

	var apiPort atomic.Int64
	apiPort.Store(int64(port1))
	// moves is odd while the push API moves to another port: a push that
	// overlaps the move may fail, as it would for a sidecar still pointed at
	// the old address.
	var moves atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var queries, badQueries, pushes, badPushes atomic.Int64
	var firstBad atomic.Value
	wg.Add(2)
	go func() { // queries, bounded
		defer wg.Done()
		for i := 0; i < 200000 && !stop.Load(); i++ {
			r, err := realQuery(dnsAddr, "udp", "svc1.net.", dns.TypeA)
			queries.Add(1)
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				badQueries.Add(1)
				firstBad.CompareAndSwap(nil, fmt.Sprintf("%v %v", err, r))
			}
		}
	}()
	go func() { // west heartbeats, bounded
		defer wg.Done()
		for i := 0; i < 20000 && !stop.Load(); i++ {
			before := moves.Load()
			code, err := westP.push(api(int(apiPort.Load())), true)
			pushes.Add(1)
			if after := moves.Load(); before != after || before%2 == 1 {
				continue
			}
			if err != nil || code != 204 {
				badPushes.Add(1)
				firstBad.CompareAndSwap(nil, fmt.Sprintf("push: %d %v", code, err))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	// pause lets the load run across each step: it returns once both the
	// queries and the pushes have made progress since the last step.
	pause := func() {
		t.Helper()
		q, p := queries.Load(), pushes.Load()
		waitFor(t, 10*time.Second, "queries and pushes to go on", func() bool {
			return queries.Load() >= q+200 && pushes.Load() >= p+20
		})
	}

	pause()
	drain := func(p int) {
		t.Helper()
		if code, err := postSigned(api(p)+"/v1/clusters/west/drain", []byte(`{"action":"drain","cluster":"west"}`), []byte("admin-key-0123456789"), time.Now()); code != 200 {
			t.Fatalf("drain: %d %v", code, err)
		}
	}
	// A good reload with a changed setting.
	if err := s.Reload(reloadCorefile(t, east, west, admin, dnsPort, port1, "ttl 9")); err != nil {
		t.Fatalf("good reload: %v", err)
	}
	pause()
	// A bad reload: the old configuration keeps serving.
	if err := s.Reload(reloadCorefile(t, east, west, admin, dnsPort, port1, "ttl many")); err == nil {
		t.Fatal("bad reload: no error")
	}
	pause()
	// A reload that moves the push API.
	moves.Add(1)
	if err := s.Reload(reloadCorefile(t, east, west, admin, dnsPort, port2, "ttl 9")); err != nil {
		t.Fatalf("reload to a new port: %v", err)
	}
	apiPort.Store(int64(port2))
	moves.Add(1)
	pause()
	stop.Store(true)
	wg.Wait()

	t.Logf("%d queries, %d pushes across 3 reloads", queries.Load(), pushes.Load())
	if badQueries.Load() > 0 || badPushes.Load() > 0 {
		t.Errorf("%d failed queries, %d refused pushes; first: %v", badQueries.Load(), badPushes.Load(), firstBad.Load())
	}
	if queries.Load() < 100 || pushes.Load() < 50 {
		t.Errorf("too little traffic to mean anything: %d queries, %d pushes", queries.Load(), pushes.Load())
	}
	// east is still down (its last report said so), west still answered.
	r, err := realQuery(dnsAddr, "udp", "svc1.net.", dns.TypeA)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.12" || r.Answer[0].Header().Ttl != 9 {
		t.Errorf("after reloads: %v %v", r, err)
	}
	// The old push port is closed; the new one serves.
	if _, err := http.Get(api(port1) + "/v1/status"); err == nil {
		t.Error("old push API port still open after moving")
	}
	// A drain survives a reload.
	drain(port2)
	if err := s.Reload(reloadCorefile(t, east, west, admin, dnsPort, port2, "ttl 10")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(api(port2) + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `"drained": true`) {
		t.Errorf("drain lost across reload: %s", b)
	}
}
