package healthswitch

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(h *HealthSwitch, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = "127.0.0.1:40000" // the page is readable from loopback without a key
	h.api.ServeHTTP(rec, req)
	return rec
}

func TestPageServedFromEmbeddedAssets(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	tests := []struct {
		path, status, ctype, contains string
	}{
		{"/", "200", "text/html", `src="/page/app.js"`},
		{"/page/app.js", "200", "text/javascript", `new EventSource("/v1/events/stream`},
		{"/page/style.css", "200", "text/css", ".badge"},
		{"/page/", "404", "", ""},
		{"/page/index.html", "404", "", ""},
		{"/index.html", "404", "", ""},
		{"/v1/nope", "404", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			rec := get(h, tc.path)
			if got := rec.Result().Status[:3]; got != tc.status {
				t.Fatalf("status %s, want %s", got, tc.status)
			}
			if tc.status != "200" {
				return
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tc.ctype)
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
		})
	}
}

// Nothing is fetched from elsewhere: no absolute URL in the assets but the
// SVG namespace (a name, never fetched), and no framework.
func TestPageAssetsAreSelfContained(t *testing.T) {
	url := regexp.MustCompile(`(https?:)?//[a-zA-Z0-9.-]+\.[a-z]{2,}`)
	total := 0
	fs.WalkDir(pageFiles, "page", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := pageFiles.ReadFile(path)
		total += len(b)
		for _, m := range url.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s refers to %s", path, m)
			}
		}
		if strings.Contains(string(b), "@import") || strings.Contains(string(b), "@font-face") {
			t.Errorf("%s imports CSS or fonts", path)
		}
		return nil
	})
	if total == 0 || total > 32<<10 {
		t.Errorf("assets are %d bytes; want small enough to read (under 32 KiB)", total)
	}
}
