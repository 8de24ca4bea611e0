package healthswitch

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// localRequest is a GET from a loopback client, which may read the state
// without a key.
func localRequest(path string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	return req
}

func getFrom(h *HealthSwitch, path, remote, auth string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = remote
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	return rec
}

// The read routes answer loopback clients, key holders, or anyone with
// status_public; everyone else gets 403.
func TestReadAccessRule(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "read.key")
	os.WriteFile(keyFile, []byte("read-key-0123456789abcdef\n"), 0o600)
	closed := newPushHS(t, "read_key_file "+keyFile)
	public := newPushHS(t, "status_public")
	for _, tc := range []struct {
		name         string
		h            *HealthSwitch
		remote, auth string
		want         int
	}{
		{"loopback v4", closed, "127.0.0.1:5000", "", 200},
		{"loopback v6", closed, "[::1]:5000", "", 200},
		{"remote without key", closed, "192.0.2.7:5000", "", 403},
		{"remote with wrong key", closed, "192.0.2.7:5000", "Bearer read-key-0123456789abcdeX", 403},
		{"remote with key", closed, "192.0.2.7:5000", "Bearer read-key-0123456789abcdef", 200},
		{"remote with key, lower-case scheme", closed, "192.0.2.7:5000", "bearer read-key-0123456789abcdef", 200},
		{"remote, basic auth", closed, "192.0.2.7:5000", "Basic cmVhZC1rZXk=", 403},
		{"status_public", public, "192.0.2.7:5000", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/status", "/v1/events"} {
				rec := getFrom(tc.h, path, tc.remote, tc.auth)
				if rec.Code != tc.want {
					t.Errorf("%s: %d, want %d: %s", path, rec.Code, tc.want, rec.Body)
				}
				if rec.Code == 403 && !strings.Contains(rec.Body.String(), "read_key_file") {
					t.Errorf("%s: the 403 does not say how to get in: %s", path, rec.Body)
				}
			}
		})
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8053": true, "[::1]:8053": true, "localhost:8053": true, "127.3.4.5:1": true,
		"0.0.0.0:8053": false, ":8053": false, "[::]:8053": false, "10.0.0.2:8053": false,
	} {
		if got := loopbackOnly(addr); got != want {
			t.Errorf("loopbackOnly(%q) = %v", addr, got)
		}
	}
}
