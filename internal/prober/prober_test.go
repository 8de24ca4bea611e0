package prober

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthyRule(t *testing.T) {
	for code, want := range map[int]bool{199: false, 200: true, 204: true, 299: true, 301: false, 302: false, 304: false, 404: false, 500: false} {
		if Healthy(code) != want {
			t.Errorf("Healthy(%d) = %v, want %v", code, !want, want)
		}
	}
}

func TestUserAgent(t *testing.T) {
	if got := UserAgent("1.2.3", "sidecar"); got != "healthswitch/1.2.3 (sidecar)" {
		t.Errorf("UserAgent = %q", got)
	}
	if got := UserAgent("", "plugin"); !strings.HasPrefix(got, "healthswitch/") || !strings.HasSuffix(got, " (plugin)") {
		t.Errorf("UserAgent = %q", got)
	}
}

// One probe: status, body, headers sent, redirect not followed, and the
// connection kept alive across probes.
func TestHTTP(t *testing.T) {
	var conns atomic.Int64
	var ua, hdr atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua.Store(r.UserAgent())
		hdr.Store(r.Header.Get("X-Check"))
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/", http.StatusFound)
			return
		}
		w.Write([]byte("hello world"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := NewClient(time.Second, 5*time.Second, false)
	for range 3 {
		resp, err := HTTP(context.Background(), c, Request{URL: srv.URL, UserAgent: "ua/1", Header: map[string]string{"X-Check": "y"}, BodyLimit: 5})
		if err != nil || !resp.Healthy() || string(resp.Body) != "hello" {
			t.Fatalf("probe: %+v %v", resp, err)
		}
	}
	if ua.Load() != "ua/1" || hdr.Load() != "y" {
		t.Errorf("headers: %v %v", ua.Load(), hdr.Load())
	}
	if conns.Load() != 1 {
		t.Errorf("%d connections for 3 probes", conns.Load())
	}
	resp, err := HTTP(context.Background(), c, Request{URL: srv.URL + "/moved"})
	if err != nil || resp.Status != http.StatusFound || resp.Healthy() {
		t.Errorf("redirect: %+v %v; want 302, not healthy", resp, err)
	}
	if resp, err := HTTP(context.Background(), NewClient(time.Second, time.Second, true), Request{URL: srv.URL + "/moved"}); err != nil || resp.Status != 200 {
		t.Errorf("followed redirect: %+v %v", resp, err)
	}
	if _, err := HTTP(context.Background(), c, Request{URL: "http://127.0.0.1:1/"}); err == nil || strings.Contains(err.Error(), "127.0.0.1:1/") {
		t.Errorf("refused: %v (want an error without the URL)", err)
	}
	if _, err := HTTP(context.Background(), c, Request{URL: "::bad"}); err == nil {
		t.Error("bad URL accepted")
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := TCP(context.Background(), addr); err != nil {
		t.Errorf("open port: %v", err)
	}
	ln.Close()
	if err := TCP(context.Background(), addr); err == nil || !strings.HasPrefix(err.Error(), "tcp dial "+addr) {
		t.Errorf("closed port: %v", err)
	}
}

// A GET whose connection is reset before any answer (it reached the
// listener of a server process that was exiting) is sent once more; a
// second reset, or a reset POST, is the answer.
func TestHTTPResetOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var resets atomic.Int64 // connections to reset before serving
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if resets.Add(-1) >= 0 {
				conn.(*net.TCPConn).SetLinger(0) // close sends RST
				conn.Read(make([]byte, 512))
				conn.Close()
				continue
			}
			go http.Serve(&oneConn{conn: conn, stop: stop}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		}
	}()
	url := "http://" + ln.Addr().String() + "/"
	for _, tc := range []struct {
		method string
		resets int64
		ok     bool
	}{{"GET", 1, true}, {"HEAD", 1, true}, {"GET", 2, false}, {"POST", 1, false}} {
		resets.Store(tc.resets)
		resp, err := HTTP(context.Background(), NewClient(time.Second, time.Second, false), Request{Method: tc.method, URL: url})
		if ok := err == nil && resp.Healthy(); ok != tc.ok {
			t.Errorf("%s after %d resets: %+v %v; want healthy %v", tc.method, tc.resets, resp, err, tc.ok)
		}
	}
}

// oneConn is a listener that yields one connection, then waits for stop.
type oneConn struct {
	conn net.Conn
	stop chan struct{}
	done atomic.Bool
}

func (l *oneConn) Accept() (net.Conn, error) {
	if l.done.Swap(true) {
		<-l.stop // http.Serve keeps serving the connection it has
		return nil, net.ErrClosed
	}
	return l.conn, nil
}
func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.conn.LocalAddr() }
