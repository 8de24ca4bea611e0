package sidecar

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// Against a real HAProxy: stop drains, twice changes nothing more, resume
// readies, and a server an operator put in maintenance stays there; over
// the unix socket and over TCP.
func TestHAProxyIngressAgainstHAProxy(t *testing.T) {
	lb := testutil.StartHAProxy(t, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	if out, err := lb.Command("set server web/s3 state maint"); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("operator maint: %q %v", out, err)
	}
	unix := &IngressAction{HAProxy: &HAProxyIngress{Socket: lb.Socket, Backends: []string{"web"}}}
	tcp := &IngressAction{HAProxy: &HAProxyIngress{Socket: lb.AdminAddr, Backends: []string{"web"}}}
	for _, a := range []*IngressAction{unix, tcp} {
		if err := a.compile(); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		a                        *IngressAction
		action, detail, statuses string
	}{
		{unix, actionStop, "2 of 3 servers changed", "s1=DRAIN s2=DRAIN s3=MAINT"},
		{unix, actionStop, "0 of 3 servers changed", "s1=DRAIN s2=DRAIN s3=MAINT"},
		{unix, actionResume, "2 of 3 servers changed", "s1=no check s2=no check s3=MAINT"},
		{unix, actionResume, "0 of 3 servers changed", "s1=no check s2=no check s3=MAINT"},
		{tcp, actionStop, "2 of 3 servers changed", "s1=DRAIN s2=DRAIN s3=MAINT"},
		{tcp, actionResume, "2 of 3 servers changed", "s1=no check s2=no check s3=MAINT"},
	}
	for i, st := range steps {
		a := st.a
		res := a.run(context.Background(), applyRequest{cluster: "east", action: st.action})
		if !res.OK || res.Detail != st.detail || res.Attempts != 1 {
			t.Errorf("step %d %s: %+v, want detail %q", i, st.action, res, st.detail)
		}
		if got := lb.Statuses(t); got != st.statuses {
			t.Errorf("step %d %s: servers %s, want %s", i, st.action, got, st.statuses)
		}
	}
}

func TestHAProxyIngressErrors(t *testing.T) {
	lb := testutil.StartHAProxy(t, "127.0.0.1:1")
	tests := []struct {
		name     string
		spec     HAProxyIngress
		want     string
		attempts int
	}{
		{"unknown backend", HAProxyIngress{Socket: lb.Socket, Backends: []string{"web", "api"}}, `backend api: haproxy says "Can't find backend."`, 3},
		{"no socket", HAProxyIngress{Socket: filepath.Join(t.TempDir(), "none.sock"), Backends: []string{"web"}}, "no such file or directory", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &IngressAction{HAProxy: &tc.spec}
			if err := a.compile(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			res := a.run(context.Background(), applyRequest{cluster: "east", action: actionStop})
			if res.OK || !strings.Contains(res.Error, tc.want) || res.Attempts != tc.attempts {
				t.Errorf("result %+v, want an error containing %q after %d attempts", res, tc.want, tc.attempts)
			}
			// Two pauses between three attempts: 50 ms, then 100 ms.
			if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
				t.Errorf("three attempts took %s", took)
			}
		})
	}
	// Every backend is read before anything is set, so a stop naming an
	// unknown backend drained nothing, not even web's server.
	if got := lb.Statuses(t); got != "s1=no check" {
		t.Errorf("servers after the failed stops: %s", got)
	}
}
