package healthswitch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
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

// maxInFlight bounds concurrent push API requests; more get 503 at once.
const maxInFlight = 64

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
	sl := registry.listeners[h.cfg.listen]
	if sl == nil {
		var err error
		if sl, err = listen(h.cfg.listen, h.tlsConfig); err != nil {
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

func listen(addr string, tlsCfg *tls.Config) (*sharedListener, error) {
	// A plain bind, without SO_REUSEPORT, so a real conflict fails loudly.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("push API: %w", err)
	}
	sl := &sharedListener{addr: addr, boundAddr: ln.Addr().String(), ln: ln, owners: map[*HealthSwitch]bool{}}
	sl.srv = &http.Server{
		Handler:           sl,
		ReadHeaderTimeout: 2 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      5 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
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
