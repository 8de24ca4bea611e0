package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// DefaultBodyLimit caps how much of a response body an HTTP check reads.
const DefaultBodyLimit = 64 << 10

// HTTPSpec checks an HTTP(S) endpoint.
type HTTPSpec struct {
	URL             string            `yaml:"url"`
	Method          string            `yaml:"method"`           // default GET
	Headers         map[string]string `yaml:"headers"`          // extra request headers
	ExpectStatus    []int             `yaml:"expect_status"`    // default: any 2xx
	ExpectBody      string            `yaml:"expect_body"`      // optional regexp over the body
	FollowRedirects bool              `yaml:"follow_redirects"` // default false: a redirect is a status like any other
	BodyLimit       int               `yaml:"body_limit"`       // bytes read, default 64 KiB

	bodyRE *regexp.Regexp
	client *http.Client
}

func (s *HTTPSpec) compile(c *Check) (err error) {
	u, err := url.Parse(s.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q: not an http:// or https:// URL", s.URL)
	}
	if s.Method == "" {
		s.Method = http.MethodGet
	}
	for _, code := range s.ExpectStatus {
		if code < 100 || code > 599 {
			return fmt.Errorf("expect_status: %d is not an HTTP status", code)
		}
	}
	if s.BodyLimit < 0 {
		return fmt.Errorf("body_limit %d: must not be negative", s.BodyLimit)
	}
	if s.BodyLimit == 0 {
		s.BodyLimit = DefaultBodyLimit
	}
	if s.ExpectBody != "" {
		if s.bodyRE, err = regexp.Compile(s.ExpectBody); err != nil {
			return fmt.Errorf("expect_body: %w", err)
		}
	}
	s.client = &http.Client{
		Timeout: c.timeout,
		// One connection kept alive per check: probing every 100 ms over a
		// fresh TCP (and TLS) handshake each time would cost more than the check.
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: c.timeout}).DialContext,
			MaxIdleConns:        1,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     max(2*c.interval, 5*time.Second),
			TLSHandshakeTimeout: c.timeout,
		},
	}
	if !s.FollowRedirects {
		s.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return nil
}

func (s *HTTPSpec) okStatus(code int) bool {
	if len(s.ExpectStatus) == 0 {
		return code >= 200 && code < 300
	}
	return slices.Contains(s.ExpectStatus, code)
}

func probeHTTP(ctx context.Context, c *Check) Result {
	s := c.HTTP
	req, err := http.NewRequestWithContext(ctx, s.Method, s.URL, nil)
	if err != nil {
		return fail(fmt.Errorf("http request %s: %w", s.URL, err))
	}
	req.Header.Set("User-Agent", "healthswitch-sidecar/"+Version)
	for k, v := range s.Headers {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is in the message already
		}
		return fail(fmt.Errorf("http %s %s: %w", s.Method, s.URL, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(s.BodyLimit)))
	// Drain a little more so the connection can be reused, but never much.
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	res := Result{Output: snippet(body)}
	switch {
	case !s.okStatus(resp.StatusCode):
		res.Err = fmt.Errorf("http %s %s: status %d", s.Method, s.URL, resp.StatusCode)
	case err != nil:
		res.Err = fmt.Errorf("http %s %s: reading body: %w", s.Method, s.URL, err)
	case s.bodyRE != nil && !s.bodyRE.Match(body):
		res.Err = fmt.Errorf("http %s %s: body does not match %q", s.Method, s.URL, s.ExpectBody)
	default:
		res.Healthy, res.Detail = true, fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return res
}

// snippet keeps the start of a body for /status, on one line.
func snippet(b []byte) string {
	s := strings.ToValidUTF8(string(b[:min(len(b), 512)]), "?")
	return strings.TrimSpace(s)
}
