package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults of every ingress action. The plugin waits 2 s for the answer to
// a notification, so the worst case of one action (attempts × timeout plus
// the pauses) stays under that by default: 3 × 500 ms + 50 ms + 100 ms.
const (
	DefaultIngressTimeout  = 500 * time.Millisecond
	DefaultIngressAttempts = 3
	ingressBackoff         = 50 * time.Millisecond
)

// IngressAction is one entry of the top-level `ingress` list: exactly one
// kind block, and how hard to try.
type IngressAction struct {
	HAProxy  *HAProxyIngress `yaml:"haproxy"`
	HTTP     *HTTPIngress    `yaml:"http"`
	Exec     *ExecIngress    `yaml:"exec"`
	Timeout  Duration        `yaml:"timeout"`  // one attempt; default 500ms
	Attempts int             `yaml:"attempts"` // default 3

	kind    string
	target  string // what it acts on, for /status and logs
	timeout time.Duration
	do      func(ctx context.Context, n applyRequest) (string, error)
}

// HTTPIngress calls one URL to stop and another to resume, e.g. Envoy's
// admin API (POST /healthcheck/fail, /healthcheck/ok).
type HTTPIngress struct {
	Stop   string `yaml:"stop"`
	Resume string `yaml:"resume"`
	Method string `yaml:"method"` // default POST

	client *http.Client
}

// ExecIngress runs a command (an argv, no shell) to stop and one to resume.
type ExecIngress struct {
	Stop   []string `yaml:"stop"`
	Resume []string `yaml:"resume"`
}

// applyRequest is what an action is asked to do.
type applyRequest struct {
	cluster, action, reason string
	epoch                   uint64
}

func compileIngress(actions []*IngressAction) error {
	for i, a := range actions {
		if a == nil {
			return fmt.Errorf("ingress[%d]: empty entry", i)
		}
		if err := a.compile(); err != nil {
			return fmt.Errorf("ingress[%d]: %w", i, err)
		}
	}
	return nil
}

func (a *IngressAction) compile() (err error) {
	var kinds []string
	if a.HAProxy != nil {
		kinds = append(kinds, "haproxy")
	}
	if a.HTTP != nil {
		kinds = append(kinds, "http")
	}
	if a.Exec != nil {
		kinds = append(kinds, "exec")
	}
	switch len(kinds) {
	case 0:
		return errors.New("no ingress kind: set one of haproxy, http, exec")
	case 1:
		a.kind = kinds[0]
	default:
		return fmt.Errorf("more than one ingress kind: %s", strings.Join(kinds, ", "))
	}
	a.timeout = DefaultIngressTimeout
	if a.Timeout != (Duration{}) {
		if err := a.Timeout.within("timeout", MinTimeout, MaxInterval); err != nil {
			return err
		}
		a.timeout = a.Timeout.Duration
	}
	switch {
	case a.Attempts < 0:
		return fmt.Errorf("attempts %d: must not be negative", a.Attempts)
	case a.Attempts == 0:
		a.Attempts = DefaultIngressAttempts
	}
	switch a.kind {
	case "haproxy":
		err = a.HAProxy.compile(a)
	case "http":
		err = a.HTTP.compile(a)
	case "exec":
		err = a.Exec.compile(a)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", a.kind, err)
	}
	return nil
}

func (h *HTTPIngress) compile(a *IngressAction) error {
	for _, f := range []struct{ name, url string }{{"stop", h.Stop}, {"resume", h.Resume}} {
		u, err := url.Parse(f.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s %q: not an http:// or https:// URL", f.name, f.url)
		}
	}
	if h.Method == "" {
		h.Method = http.MethodPost
	}
	h.client = &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second},
	}
	a.target, a.do = h.Stop+" | "+h.Resume, h.apply
	return nil
}

func (h *HTTPIngress) apply(ctx context.Context, n applyRequest) (string, error) {
	u := h.Resume
	if n.action == actionStop {
		u = h.Stop
	}
	req, err := http.NewRequestWithContext(ctx, h.Method, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", "healthswitch-sidecar/"+Version)
	resp, err := h.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("%s %s: %w", h.Method, u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("%s %s: status %d: %s", h.Method, u, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return fmt.Sprintf("%s %s: %d", h.Method, u, resp.StatusCode), nil
}

func (e *ExecIngress) compile(a *IngressAction) error {
	if len(e.Stop) == 0 || e.Stop[0] == "" {
		return errors.New("stop: required (an argv list, e.g. [/usr/local/bin/stop-lb])")
	}
	if len(e.Resume) == 0 || e.Resume[0] == "" {
		return errors.New("resume: required (an argv list, e.g. [/usr/local/bin/start-lb])")
	}
	a.target, a.do = clip(strings.Join(e.Stop, " "))+" | "+clip(strings.Join(e.Resume, " ")), e.apply
	return nil
}

// clip keeps what /status and errors show of a command short.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// apply runs the command with the notification in HEALTHSWITCH_* variables;
// exit 0 is success.
func (e *ExecIngress) apply(ctx context.Context, n applyRequest) (string, error) {
	argv := e.Resume
	if n.action == actionStop {
		argv = e.Stop
	}
	// env(1) adds the variables, so the one way the sidecar runs commands
	// (process group, bounded output, killed on timeout) serves here too.
	withEnv := append([]string{"env",
		"HEALTHSWITCH_CLUSTER=" + n.cluster, "HEALTHSWITCH_ACTION=" + n.action,
		"HEALTHSWITCH_REASON=" + n.reason, fmt.Sprintf("HEALTHSWITCH_EPOCH=%d", n.epoch)}, argv...)
	r, err := runCommand(ctx, withEnv, DefaultOutputLimit)
	switch {
	case err != nil:
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // named after env otherwise
		}
		return "", fmt.Errorf("%s: %w", argv[0], err)
	case r.exitCode != 0:
		return "", commandFailed(argv, r)
	}
	return fmt.Sprintf("%s exited 0", argv[0]), nil
}

// ActionResult is one action's outcome for one notification.
type ActionResult struct {
	Kind     string  `json:"kind"`
	Target   string  `json:"target"`
	OK       bool    `json:"ok"`
	Detail   string  `json:"detail,omitempty"`
	Error    string  `json:"error,omitempty"`
	Attempts int     `json:"attempts"`
	Duration float64 `json:"duration_ms"`
}

// applyAll runs every action at once (they are independent, and the slowest
// bounds the answer), each retried within its bound. Every action is tried
// even when another fails: draining what can be drained is better than
// nothing.
func applyAll(ctx context.Context, actions []*IngressAction, n applyRequest) []ActionResult {
	results := make([]ActionResult, len(actions))
	var wg sync.WaitGroup
	for i, a := range actions {
		wg.Go(func() { results[i] = a.run(ctx, n) })
	}
	wg.Wait()
	return results
}

func (a *IngressAction) run(ctx context.Context, n applyRequest) (res ActionResult) {
	start := time.Now()
	res = ActionResult{Kind: a.kind, Target: a.target}
	defer func() {
		if p := recover(); p != nil {
			res.OK, res.Error = false, fmt.Sprintf("panic: %v", p)
		}
		res.Duration = float64(time.Since(start).Microseconds()) / 1000
	}()
	backoff := ingressBackoff
	for res.Attempts = 1; ; res.Attempts++ {
		actx, cancel := context.WithTimeout(ctx, a.timeout)
		detail, err := a.do(actx, n)
		cancel()
		if err == nil {
			res.OK, res.Detail, res.Error = true, detail, ""
			return res
		}
		res.Error = err.Error()
		if res.Attempts >= a.Attempts || ctx.Err() != nil {
			return res
		}
		select {
		case <-ctx.Done():
			return res
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}
