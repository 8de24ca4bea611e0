package sidecar

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestHTTPCheck(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var ua atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua.Store(r.UserAgent())
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/big":
			w.Write([]byte(strings.Repeat("x", 1<<20) + "TAIL"))
		default:
			w.WriteHeader(int(status.Load()))
			w.Write([]byte(`{"status": "ok"}`))
		}
	}))
	defer srv.Close()

	tests := []struct {
		name    string
		spec    string
		status  int
		healthy bool
		why     string
	}{
		{"2xx by default", `{url: URL/healthz}`, 200, true, "HTTP 200"},
		{"500 fails", `{url: URL/healthz}`, 500, false, "status 500"},
		{"expected status list", `{url: URL/healthz, expect_status: [503]}`, 503, true, "HTTP 503"},
		{"status not in list", `{url: URL/healthz, expect_status: [200]}`, 204, false, "status 204"},
		{"body matches", `{url: URL/healthz, expect_body: '"status":\s*"ok"'}`, 200, true, "HTTP 200"},
		{"body does not match", `{url: URL/healthz, expect_body: 'ready'}`, 200, false, `body does not match "ready"`},
		{"redirect not followed", `{url: URL/redirect}`, 200, false, "status 302"},
		{"redirect followed when asked", `{url: URL/redirect, follow_redirects: true}`, 200, true, "HTTP 200"},
		{"body read up to the limit", `{url: URL/big, body_limit: 1024, expect_body: TAIL}`, 200, false, "body does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(tc.status))
			c := newCheck(t, "http: "+strings.ReplaceAll(tc.spec, "URL", srv.URL))
			expect(t, c, tc.healthy, tc.why)
		})
	}
	if got, _ := ua.Load().(string); got != "healthswitch/"+Version+" (sidecar)" {
		t.Errorf("User-Agent = %q", got)
	}
}

func TestHTTPCheckServerDies(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	c := newCheck(t, "http: {url: "+srv.URL+"}")
	expect(t, c, true, "HTTP 200")
	srv.CloseClientConnections()
	srv.Close()
	expect(t, c, false, "connection refused")
}

func TestHTTPCheckTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := newCheck(t, "http: {url: "+srv.URL+"}\ninterval: 200ms\ntimeout: 50ms")
	r := expect(t, c, false, "timed out after 50ms")
	if r.Duration > 150e6 {
		t.Errorf("took %s with a 50ms timeout", r.Duration)
	}
}
