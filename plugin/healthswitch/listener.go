package healthswitch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// The push API listener outlives plugin instances. A Corefile reload starts
// the new instance before the old one stops, so each address is bound once
// per process and its handler swapped to the newest instance: no "address in
// use", no gap, and no second socket answering half the requests.
type sharedListener struct {
	addr      string
	boundAddr string
	ln        net.Listener
	srv       *http.Server
	current   atomic.Pointer[HealthSwitch]
	owners    map[*HealthSwitch]bool
}

func (sl *sharedListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := sl.current.Load()
	if h == nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	h.api.ServeHTTP(w, r)
}

// startListener binds the instance's address, or takes over the listener
// bound there already.
func (h *HealthSwitch) startListener() error {
	registry.Lock()
	defer registry.Unlock()
	registry.started[h] = true
	warnExposure(h.cfg)
	sl := registry.listeners[h.cfg.listen]
	if sl == nil {
		var err error
		if sl, err = listen(h.cfg.listen, h.tlsConfig, h.cfg.api); err != nil {
			return err
		}
		registry.listeners[h.cfg.listen] = sl
	}
	for o := range sl.owners {
		if o.gen == h.gen {
			return fmt.Errorf("listen %s is already used by the healthswitch block of %v", h.cfg.listen, o.cfg.zones)
		}
	}
	sl.owners[h] = true
	sl.current.Store(h)
	h.listener = sl
	return nil
}

// listen binds addr behind the connection guard (limits.go). The limits
// are those of the instance that binds; a reload keeps the bound listener.
func listen(addr string, tlsCfg *tls.Config, api apiConfig) (*sharedListener, error) {
	// A plain bind, without SO_REUSEPORT, so a real conflict fails loudly.
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("push API: %w", err)
	}
	var ln net.Listener = newConnGuard(raw, api)
	sl := &sharedListener{addr: addr, boundAddr: raw.Addr().String(), ln: raw, owners: map[*HealthSwitch]bool{}}
	sl.srv = &http.Server{
		Handler:           sl,
		ReadHeaderTimeout: headerTimeout,
		// Each body gets its own deadline (admit); this only backs it up.
		ReadTimeout:    headerTimeout + bodyDeadline(report.MaxBodySize),
		WriteTimeout:   5 * time.Second,
		IdleTimeout:    90 * time.Second,
		MaxHeaderBytes: 16 << 10,
		ConnContext:    connContext,
		ConnState:      connState,
		ErrorLog:       stdlog.New(io.Discard, "", 0), // hostile clients would fill the log
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	go func() {
		if err := sl.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorf("push API on %s: %v", addr, err)
		}
	}()
	log.Infof("push API listening on %s", ln.Addr())
	return sl, nil
}

// releaseListener releases this instance's hold; the last owner closes it.
// Called with the registry locked.
func (h *HealthSwitch) releaseListener() {
	sl := h.listener
	if sl == nil {
		return
	}
	delete(sl.owners, h)
	if sl.current.Load() == h {
		sl.current.Store(nil)
		var newest *HealthSwitch
		for o := range sl.owners {
			if newest == nil || o.gen > newest.gen {
				newest = o
			}
		}
		if newest != nil {
			sl.current.Store(newest)
		}
	}
	if len(sl.owners) == 0 {
		delete(registry.listeners, sl.addr)
		// The address is free when this returns; requests in flight finish.
		sl.ln.Close()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if sl.srv.Shutdown(ctx) != nil {
				sl.srv.Close()
			}
		}()
	}
}

func (h *HealthSwitch) stopListener() {
	registry.Lock()
	defer registry.Unlock()
	delete(registry.started, h)
	h.releaseListener()
}

// Addr returns the address the push API is bound to (useful with port 0).
func (h *HealthSwitch) Addr() string {
	registry.Lock()
	defer registry.Unlock()
	if h.listener == nil {
		return ""
	}
	return h.listener.boundAddr
}
