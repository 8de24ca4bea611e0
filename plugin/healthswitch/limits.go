package healthswitch

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// Push API limits. Nothing a sender without a key can do holds anything a
// signed report needs: connections are capped per source address, and at
// the global cap the oldest connection that never carried a verified
// request is closed to make room; headers and bodies must arrive in
// bounded time at a minimum rate; a body is read (Content-Length required,
// at most report.MaxBodySize) without holding any global slot; only a
// verified request then takes an apply slot.
const (
	defaultMaxConns     = 4096
	defaultPerSource    = 32
	defaultPerSourceReq = 8
	// headerTimeout bounds the arrival of a request's headers.
	headerTimeout = 2 * time.Second
	// A body must arrive within bodyBase + Content-Length / bodyMinRate.
	bodyBase    = time.Second
	bodyMinRate = 16 << 10 // bytes per second
	// applySlots bound the verified requests applied at once; one waits at
	// most applyWait for a slot, then gets 503.
	applySlots = 16
	applyWait  = time.Second
)

func (a apiConfig) limits() (maxConns, perSource, perSourceReq int) {
	maxConns, perSource, perSourceReq = a.maxConns, a.perSource, a.perSourceReq
	if maxConns == 0 {
		maxConns = defaultMaxConns
	}
	if perSource == 0 {
		perSource = defaultPerSource
	}
	if perSourceReq == 0 {
		perSourceReq = defaultPerSourceReq
	}
	return
}

// bodyDeadline is how long a body of n bytes may take to arrive.
func bodyDeadline(n int64) time.Duration {
	return bodyBase + time.Duration(n)*time.Second/bodyMinRate
}

// connGuard is the push API's listener: it caps connections per source
// address and in total.
type connGuard struct {
	net.Listener
	maxConns, perSource int

	mu       sync.Mutex
	bySource map[string]int
	conns    map[*guardedConn]struct{}
	verified map[string]time.Time // source address -> when it last sent a verified request
}

// trustedFor is how long a source that sent a verified request is exempt
// from the per-source limits: a peer forwarding for many clusters at once,
// or sidecars behind one NAT address, are not held to one client's share.
// The global cap still evicts unverified connections first.
const trustedFor = 10 * time.Minute

type guardedConn struct {
	net.Conn
	g       *connGuard
	src     string
	born    time.Time
	trusted atomic.Bool // carried a verified request: never evicted
	active  atomic.Bool // carried a request
	dropped atomic.Bool // closed by the guard (counted already)
	removed bool        // guarded by g.mu
}

func newConnGuard(ln net.Listener, api apiConfig) *connGuard {
	maxConns, perSource, _ := api.limits()
	return &connGuard{Listener: ln, maxConns: maxConns, perSource: perSource, bySource: map[string]int{}, conns: map[*guardedConn]struct{}{}, verified: map[string]time.Time{}}
}

func (g *connGuard) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr().String())
		g.mu.Lock()
		if g.bySource[src] >= g.perSource && !g.trustedLocked(src) {
			g.mu.Unlock()
			apiConnsDropped.WithLabelValues("per_source").Inc() // counted before the client can see the close
			c.Close()
			continue
		}
		var victim *guardedConn
		if len(g.conns) >= g.maxConns {
			victim = g.oldestUntrusted()
			if victim == nil {
				g.mu.Unlock()
				apiConnsDropped.WithLabelValues("full").Inc() // counted before the client can see the close
				c.Close()
				continue
			}
			victim.dropped.Store(true)
			g.removeLocked(victim)
		}
		gc := &guardedConn{Conn: c, g: g, src: src, born: time.Now()}
		g.conns[gc] = struct{}{}
		g.bySource[src]++
		apiConnsOpen.Inc()
		g.mu.Unlock()
		if victim != nil {
			apiConnsDropped.WithLabelValues("evicted").Inc()
			victim.Conn.Close()
		}
		return gc, nil
	}
}

// trustedLocked reports whether src sent a verified request lately.
// Called with mu held.
func (g *connGuard) trustedLocked(src string) bool {
	at, ok := g.verified[src]
	if ok && time.Since(at) > trustedFor {
		delete(g.verified, src)
		return false
	}
	return ok
}

func (g *connGuard) trusted(src string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.trustedLocked(src)
}

// oldestUntrusted picks the connection to evict. Called with mu held.
func (g *connGuard) oldestUntrusted() *guardedConn {
	var old *guardedConn
	for c := range g.conns {
		if !c.trusted.Load() && (old == nil || c.born.Before(old.born)) {
			old = c
		}
	}
	return old
}

// removeLocked forgets a connection once. Called with mu held.
func (g *connGuard) removeLocked(c *guardedConn) {
	if c.removed {
		return
	}
	c.removed = true
	delete(g.conns, c)
	if g.bySource[c.src]--; g.bySource[c.src] <= 0 {
		delete(g.bySource, c.src)
	}
	apiConnsOpen.Dec()
}

func (c *guardedConn) Close() error {
	c.g.mu.Lock()
	c.g.removeLocked(c)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// connState counts the connections that end without a request.
func connState(c net.Conn, st http.ConnState) {
	gc := unwrapConn(c)
	if gc == nil {
		return
	}
	switch st {
	case http.StateActive:
		gc.active.Store(true)
	case http.StateClosed, http.StateHijacked:
		if gc.active.Load() || gc.dropped.Load() {
			return
		}
		if time.Since(gc.born) >= headerTimeout {
			apiConnsDropped.WithLabelValues("slow_headers").Inc()
		} else {
			apiConnsDropped.WithLabelValues("no_request").Inc()
		}
	}
}

func unwrapConn(c net.Conn) *guardedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	gc, _ := c.(*guardedConn)
	return gc
}

type connKey struct{}

// connContext puts the connection in each request's context, so a handler
// can mark it trusted.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if gc := unwrapConn(c); gc != nil {
		return context.WithValue(ctx, connKey{}, gc)
	}
	return ctx
}

// trust marks the request's connection as having carried a verified
// request: it is never evicted to make room, and its source address is
// exempt from the per-source limits for trustedFor.
func trust(ctx context.Context) {
	if gc, ok := ctx.Value(connKey{}).(*guardedConn); ok {
		gc.trusted.Store(true)
		gc.g.mu.Lock()
		if len(gc.g.verified) < gc.g.maxConns { // bounded: at most one entry per possible connection
			gc.g.verified[gc.src] = time.Now()
		} else if _, ok := gc.g.verified[gc.src]; ok {
			gc.g.verified[gc.src] = time.Now()
		}
		gc.g.mu.Unlock()
	}
}

// trustedSource reports whether the request comes from a source address
// that sent a verified request lately.
func trustedSource(ctx context.Context) bool {
	gc, ok := ctx.Value(connKey{}).(*guardedConn)
	return ok && gc.g.trusted(gc.src)
}

// apiGate is an instance's request admission: the bodies in flight per
// source, and the apply slots.
type apiGate struct {
	inflight sourceLimit
	applying chan struct{}
}

func newAPIGate(api apiConfig) *apiGate {
	_, _, perSourceReq := api.limits()
	return &apiGate{inflight: sourceLimit{max: perSourceReq, n: map[string]int{}}, applying: make(chan struct{}, applySlots)}
}

// sourceLimit counts the requests of each source address reading a body.
type sourceLimit struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func (s *sourceLimit) acquire(src string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[src] >= s.max {
		return false
	}
	s.n[src]++
	return true
}

func (s *sourceLimit) release(src string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[src]--; s.n[src] <= 0 {
		delete(s.n, src)
	}
}

// admit is the gate every request passes before its handler: a request
// with a body must declare its length (at most report.MaxBodySize), its
// source may have only so many bodies in flight, and the body must arrive
// by a deadline proportional to its length. Refused requests close the
// connection. The returned func releases what was taken.
func (h *HealthSwitch) admit(w http.ResponseWriter, r *http.Request) (func(), *apiError) {
	if r.ContentLength == 0 {
		return func() {}, nil
	}
	w.Header().Set("Connection", "close") // until the body is read: see readBody
	switch {
	case r.ContentLength < 0:
		return nil, reject(http.StatusLengthRequired, "length_required", "Content-Length is required")
	case r.ContentLength > report.MaxBodySize:
		return nil, reject(http.StatusRequestEntityTooLarge, "too_large", "body over %d bytes", report.MaxBodySize)
	}
	// Not supported by test recorders; the server's ReadTimeout backs it up.
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyDeadline(r.ContentLength)))
	if trustedSource(r.Context()) {
		return func() {}, nil
	}
	src := sourceOf(r.RemoteAddr)
	if !h.gate.inflight.acquire(src) {
		return nil, reject(http.StatusTooManyRequests, "per_source", "too many requests in flight from %s", src)
	}
	return func() { h.gate.inflight.release(src) }, nil
}

// readBody reads the declared body. A body that does not arrive in time is
// 408.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if r.ContentLength < 0 || r.ContentLength > report.MaxBodySize {
		return nil, reject(http.StatusLengthRequired, "length_required", "Content-Length is required")
	}
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, reject(http.StatusRequestTimeout, "slow_body", "body of %d bytes did not arrive within %s", r.ContentLength, bodyDeadline(r.ContentLength))
		}
		return nil, reject(http.StatusBadRequest, "read", "reading body: %v", err)
	}
	w.Header().Del("Connection") // read in full: the connection may be kept
	return body, nil
}

// applySlot waits for one of the apply slots (only verified requests ask).
// The returned func gives it back.
func (h *HealthSwitch) applySlot(ctx context.Context) (func(), *apiError) {
	select {
	case h.gate.applying <- struct{}{}: // a free slot: no timer to make
		return h.releaseSlot, nil
	default:
	}
	t := time.NewTimer(applyWait)
	defer t.Stop()
	select {
	case h.gate.applying <- struct{}{}:
		return h.releaseSlot, nil
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, reject(http.StatusServiceUnavailable, "busy", "no apply slot free within %s", applyWait)
}

func (h *HealthSwitch) releaseSlot() { <-h.gate.applying }
