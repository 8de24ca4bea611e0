package sidecar

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	hsprobe "github.com/healthswitch/healthswitch/internal/prober"
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
			DialContext:         hsprobe.Dial(&net.Dialer{Timeout: c.timeout}),
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
	resp, err := hsprobe.HTTP(ctx, s.client, hsprobe.Request{Method: s.Method, URL: s.URL, Header: s.Headers,
		UserAgent: hsprobe.UserAgent(Version, "sidecar"), BodyLimit: s.BodyLimit})
	if err != nil {
		return fail(fmt.Errorf("http %s %s: %w", s.Method, s.URL, err))
	}
	res := Result{Output: snippet(resp.Body)}
	switch {
	case !s.okStatus(resp.Status):
		res.Err = fmt.Errorf("http %s %s: status %d", s.Method, s.URL, resp.Status)
	case resp.ReadErr != nil:
		res.Err = fmt.Errorf("http %s %s: reading body: %w", s.Method, s.URL, resp.ReadErr)
	case s.bodyRE != nil && !s.bodyRE.Match(resp.Body):
		res.Err = fmt.Errorf("http %s %s: body does not match %q", s.Method, s.URL, s.ExpectBody)
	default:
		res.Healthy, res.Detail = true, fmt.Sprintf("HTTP %d", resp.Status)
	}
	return res
}

// snippet keeps the start of a body for /status, on one line.
func snippet(b []byte) string {
	s := strings.ToValidUTF8(string(b[:min(len(b), 512)]), "?")
	return strings.TrimSpace(s)
}
