package sidecar

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Held connections: the event source of http and tcp checks (and of the
// sockets of the ovs and crio presets) is one idle connection to the
// target. A server process that dies closes it (FIN, or RST), so the check
// runs at once; the check decides, so a server that restarted fast on the
// same port is not called down.

func watchTCP(ctx context.Context, c *Check, wake func()) error {
	addr := c.TCP.Address
	return holdConn(ctx, c, wake, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, nil)
}

func watchHTTP(ctx context.Context, c *Check, wake func()) error {
	u, err := url.Parse(c.HTTP.URL)
	if err != nil {
		return fmt.Errorf("%w: %w", errCannotWatch, err)
	}
	return holdConn(ctx, c, wake, httpDialer(u), func(conn net.Conn) error { return keepAliveRequest(conn, c.HTTP, u) })
}

func unixDialer(path string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

func httpDialer(u *url.URL) func(context.Context) (net.Conn, error) {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	addr := net.JoinHostPort(host, port)
	if u.Scheme == "https" {
		d := &tls.Dialer{Config: &tls.Config{ServerName: host, NextProtos: []string{"http/1.1"}}}
		return func(ctx context.Context) (net.Conn, error) {
			conn, err := d.DialContext(ctx, "tcp", addr)
			var verr *tls.CertificateVerificationError
			if errors.As(err, &verr) { // will not change by retrying: poll only
				return nil, fmt.Errorf("%w: %w", errCannotWatch, err)
			}
			return conn, err
		}
	}
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// keepAliveRequest sends the check's request once so that the connection
// sits in the server's keep-alive state (a server may drop a connection
// that never sent a request sooner), and reads the whole answer.
func keepAliveRequest(conn net.Conn, s *HTTPSpec, u *url.URL) error {
	req, err := http.NewRequest(s.Method, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errCannotWatch, err)
	}
	req.Header.Set("User-Agent", "healthswitch-sidecar/"+Version)
	for k, v := range s.Headers {
		req.Header.Set(k, v)
	}
	if err := req.Write(conn); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20+1))
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.Close:
		return fmt.Errorf("%w: the server closes the connection after each response (no keep-alive)", errCannotWatch)
	case n > 1<<20 || br.Buffered() > 0:
		return fmt.Errorf("%w: the response does not leave the connection idle", errCannotWatch)
	}
	return nil
}

// holdConn keeps one idle connection to the target. When it ends, one new
// connection is tried at once and the check is woken as soon as that
// attempt resolves: a process that dies may close its connections just
// before its listener, and a check run in between would reach the dying
// listener and be reset, calling a fast restart (a new process already
// listening on the port) down. A new connection after a loss wakes the
// check too (the target may be back).
//
// A server that keeps closing new connections at once (three in a row,
// before any was held) does not keep idle connections: the source cannot
// start. One that does so later is retried with backoff.
func holdConn(ctx context.Context, c *Check, wake func(), dial func(context.Context) (net.Conn, error), greet func(net.Conn) error) error {
	const quickLimit = 3
	atOnce := min(c.timeout/2, 10*time.Millisecond)
	bo := watchBackoff(c, connBackoff)
	held, lost, pending, quick := false, false, false, 0
	for {
		conn, err := open(ctx, c, dial, greet)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if !held && isCannotWatch(err) {
				return err
			}
			if pending {
				wake()
			}
			lost, pending, quick = true, false, 0
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		traced(c, "held connection")
		if lost || pending {
			wake()
		}
		lost, pending = false, false
		start := time.Now()
		waitClosed(ctx, conn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The check's own kept-alive connections went with the server's: drop
		// them, or the next run would fail on one (connection reset) even when
		// the server is already back.
		if c.HTTP != nil && c.HTTP.client != nil {
			c.HTTP.client.CloseIdleConnections()
		}
		lived := time.Since(start)
		if lived >= atOnce {
			held, quick, pending = true, 0, true
			bo.reset()
			continue
		}
		// Closed at once: a server that does not keep idle connections,
		// or one that is dropping them; wake now, and never spin.
		if quick++; !held && quick >= quickLimit {
			wake()
			return fmt.Errorf("%w: the server closed %d new connections at once (after %s)", errCannotWatch, quick, lived.Round(time.Microsecond))
		}
		wake()
		lost, pending = true, true // and again once the next attempt says more
		if !bo.wait(ctx) {
			return ctx.Err()
		}
	}
}

func open(ctx context.Context, c *Check, dial func(context.Context) (net.Conn, error), greet func(net.Conn) error) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	if greet != nil {
		conn.SetDeadline(time.Now().Add(c.timeout))
		if err := greet(conn); err != nil {
			conn.Close()
			return nil, err
		}
		conn.SetDeadline(time.Time{})
	}
	return conn, nil
}

// waitClosed blocks until the peer closes conn or ctx ends, then closes it.
// Bytes the server sends unasked are read and dropped.
func waitClosed(ctx context.Context, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			return
		}
	}
}
