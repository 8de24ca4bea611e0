// Package prober holds the one HTTP prober and the one TCP prober, shared by
// the plugin's active probes and the sidecar's http and tcp checks, so both
// agree on what is healthy and on how they introduce themselves.
//
// The healthy rule: an HTTP answer is healthy when its status is 2xx. A
// redirect is not followed (unless a sidecar check asks for it) and is not
// healthy: the health endpoint moved or sits behind a login.
package prober

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"syscall"
	"time"
)

// Healthy is the healthy rule for an HTTP status: 2xx only.
func Healthy(code int) bool { return code >= 200 && code < 300 }

// UserAgent is the User-Agent of every probe: healthswitch/<version> (<role>),
// role being plugin or sidecar.
func UserAgent(version, role string) string {
	if version == "" {
		version = BuildVersion()
	}
	return "healthswitch/" + version + " (" + role + ")"
}

// BuildVersion is the module version this binary was built from, or "dev".
func BuildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "github.com/healthswitch/healthswitch" && dep.Version != "" && dep.Version != "(devel)" {
				return dep.Version
			}
		}
		if v := bi.Main.Version; bi.Main.Path == "github.com/healthswitch/healthswitch" && v != "" && v != "(devel)" {
			return v
		}
	}
	return "dev"
}

// NewClient is an HTTP client for probing one endpoint over and over: one
// connection kept alive (a fresh TCP and TLS handshake every 100 ms would
// cost more than the check), no proxy, no compression, redirects not
// followed unless follow.
func NewClient(timeout, idle time.Duration, follow bool) *http.Client {
	c := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         Dial(&net.Dialer{Timeout: timeout}),
			MaxIdleConns:        1,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     idle,
			TLSHandshakeTimeout: timeout,
			DisableCompression:  true,
		},
	}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// Request is one HTTP probe.
type Request struct {
	Method    string // default GET
	URL       string
	Header    map[string]string
	UserAgent string
	BodyLimit int // bytes of the body kept; default 4 KiB
}

// Response is what a probe got back. ReadErr is an error reading the body.
type Response struct {
	Status  int
	Body    []byte
	ReadErr error
}

// Healthy applies the healthy rule to the status.
func (r Response) Healthy() bool { return Healthy(r.Status) }

// HTTP runs one probe. The error is a failure to get an answer at all.
func HTTP(ctx context.Context, client *http.Client, r Request) (Response, error) {
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, r.URL, nil)
	if err != nil {
		return Response{}, err
	}
	req.Header.Set("User-Agent", r.UserAgent)
	for k, v := range r.Header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if errors.Is(err, syscall.ECONNRESET) && ctx.Err() == nil && (method == http.MethodGet || method == http.MethodHead) {
		// Dial's race, one step later: the kernel completed the handshake
		// for the listener of a server process that is just exiting, so
		// the request is reset unread while the replacement listens on the
		// same port. A GET or HEAD is sent once more.
		resp, err = client.Do(req)
	}
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is in the caller's message already
		}
		return Response{}, err
	}
	defer resp.Body.Close()
	limit := r.BodyLimit
	if limit <= 0 {
		limit = 4 << 10
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, int64(limit)))
	// Drain a little more so the connection can be reused, but never much.
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	return Response{Status: resp.StatusCode, Body: body, ReadErr: rerr}, nil
}

// Dial is d.DialContext that tries once more when the connect itself was
// reset: with SO_REUSEPORT, a connection the kernel hashed to the listener
// of a server process that is just exiting is reset, while the process that
// replaced it already listens on the same port. Only a reset at connect is
// retried; a refused connection is an answer.
func Dial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if errors.Is(err, syscall.ECONNRESET) && ctx.Err() == nil {
			conn, err = d.DialContext(ctx, network, addr)
		}
		return conn, err
	}
}

// TCP is healthy when a connection to addr (host:port) opens.
func TCP(ctx context.Context, addr string) error {
	conn, err := Dial(&net.Dialer{})(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp dial %s: %w", addr, err)
	}
	return conn.Close()
}
