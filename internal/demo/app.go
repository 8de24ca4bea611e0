package demo

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// App is a simulated cluster's application: /healthz answers 200, or 500
// while a fault is injected. A fault is injected in-process (SetFailing) or,
// for the demo's command-line control, by creating FailFile.
type App struct {
	Name     string
	URL      string // base URL, http://ip:port
	FailFile string // when set and the file exists, the app is failing

	srv     *http.Server
	failing atomic.Bool
	served  atomic.Int64
}

// StartApp listens on addr ("127.0.0.11:0" picks a free port).
func StartApp(name, addr string) (*App, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("app %s: %w", name, err)
	}
	a := &App{Name: name, URL: "http://" + ln.Addr().String()}
	a.srv = &http.Server{
		Handler:           http.HandlerFunc(a.serve),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
	}
	go a.srv.Serve(ln)
	return a, nil
}

// HealthURL is what the sidecar checks.
func (a *App) HealthURL() string { return a.URL + "/healthz" }

// SetFailing injects (true) or removes (false) the fault.
func (a *App) SetFailing(v bool) { a.failing.Store(v) }

// Failing reports whether the app answers errors now.
func (a *App) Failing() bool {
	if a.failing.Load() {
		return true
	}
	if a.FailFile != "" {
		if _, err := os.Stat(a.FailFile); err == nil {
			return true
		}
	}
	return false
}

// Close stops the app at once: connections are refused from here on, as
// when its process is killed.
func (a *App) Close() error { return a.srv.Close() }

// Shutdown stops the app gracefully.
func (a *App) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return a.srv.Shutdown(ctx)
}

func (a *App) serve(w http.ResponseWriter, r *http.Request) {
	a.served.Add(1)
	if a.Failing() {
		http.Error(w, "injected fault", http.StatusInternalServerError)
		return
	}
	if r.URL.Path == "/healthz" {
		fmt.Fprintln(w, "ok")
		return
	}
	fmt.Fprintf(w, "hello from %s\n", a.Name)
}
