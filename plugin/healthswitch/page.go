package healthswitch

import (
	"embed"
	"io/fs"
	"net/http"
)

// The status page (GET /): a read-only view of /v1/status and the
// transitions of /v1/events/stream. Its assets are embedded; it loads nothing
// from elsewhere and shows nothing /v1/status does not.

//go:embed page
var pageFiles embed.FS

// pageRoutes adds the page and the event stream to the API's mux, beside
// /v1/status, so that whatever access rule guards one guards all.
func (h *HealthSwitch) pageRoutes(mux *http.ServeMux) {
	hb := newHub()
	h.engine.attachHub(hb)
	assets, _ := fs.Sub(pageFiles, "page")
	files := http.FileServerFS(assets)
	// The same access rule as /v1/status: the page shows nothing more.
	mux.HandleFunc("GET /{$}", h.readable(func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w)
		http.ServeFileFS(w, r, assets, "index.html")
	}))
	mux.Handle("GET /page/", h.readable(http.StripPrefix("/page", pageAssets(files)).ServeHTTP))
	mux.HandleFunc("GET "+streamPath, h.readable(hb.handleStream))
}

func pageAssets(files http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" || r.URL.Path == "/index.html" {
			http.NotFound(w, r) // the page itself lives at /
			return
		}
		pageHeaders(w)
		files.ServeHTTP(w, r)
	})
}

// pageHeaders forbid the page to load or send anything outside this listener.
func pageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-cache")
}
