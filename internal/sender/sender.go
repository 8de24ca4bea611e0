// Package sender sends messages in the background with retries: the one
// sender behind the plugin's notify webhooks, peer forwards and on_down/on_up
// hooks, and the sidecar's report pushes.
//
// Messages are queued by key (a destination, or a destination and a
// cluster). Per key at most one message is in flight and one is pending; a
// newer message replaces the pending one, and ends the retries of the one in
// flight, so a dead receiver costs one message of memory and, once back, gets
// only the newest message, never a backlog of stale ones. Keys are
// independent: a slow destination never delays another.
package sender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Message is one thing to deliver. It is a POST of Body to URL, unless Run
// is set: then Run is the delivery (a hook command, say).
type Message struct {
	URL    string
	Body   []byte
	Header http.Header // sent as is with every attempt
	// Sign, when set, signs each attempt's request as it leaves (e.g. with
	// report.SignRequest), so every attempt carries a fresh timestamp.
	Sign func(req *http.Request, now time.Time, body []byte)
	// Run replaces the POST. A nil error is delivered; an error wrapping
	// ErrRetry is retried; any other error is given up.
	Run func(ctx context.Context) error
	// Timeout, when set, replaces the sender's timeout for this message.
	Timeout time.Duration
}

// ErrRetry marks an error of Message.Run worth another attempt.
var ErrRetry = errors.New("retry")

// Outcome is the class of one attempt, as the retry policy sorts it. Its
// string is the result label of the callers' metrics.
type Outcome string

// Outcomes of an attempt.
const (
	OK           Outcome = "ok"            // 2xx: delivered
	Conflict     Outcome = "conflict"      // 409: the receiver has it already (replay) or never will (skew): done
	Rejected     Outcome = "rejected"      // other 4xx, or a failed Run: given up
	ServerError  Outcome = "server_error"  // 5xx, 408, 425, 429: retried
	NetworkError Outcome = "network_error" // no answer: retried
	Panicked     Outcome = "panic"         // the attempt panicked: given up, the loop goes on
)

// Delivered reports whether the message reached the receiver.
func (o Outcome) Delivered() bool { return o == OK || o == Conflict }

// Retry reports whether the policy tries the message again.
func (o Outcome) Retry() bool { return o == ServerError || o == NetworkError }

// Classify sorts an HTTP status into an outcome: the one retry policy.
func Classify(code int) Outcome {
	switch {
	case code >= 200 && code < 300:
		return OK
	case code == http.StatusConflict:
		return Conflict
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return ServerError
	}
	return Rejected // 1xx, 3xx (redirects are not followed with a signed body), other 4xx
}

// Result is what happened to the last attempt for a key.
type Result struct {
	Delivered bool      `json:"delivered"`
	At        time.Time `json:"at,omitzero"`
	Code      int       `json:"code,omitempty"` // HTTP status, 0 when none
	Outcome   Outcome   `json:"result,omitempty"`
	Error     string    `json:"error,omitempty"`
	LastOK    time.Time `json:"last_ok,omitzero"`
	Failures  uint64    `json:"failures"`
	Dropped   uint64    `json:"dropped"` // superseded before delivery
}

// Config sets up a Sender.
type Config struct {
	Timeout    time.Duration // per attempt; default 2s
	MinBackoff time.Duration // default 25ms
	MaxBackoff time.Duration // default 1s
	UserAgent  string
	// Observe is called after every attempt (for metrics); Dropped when a
	// pending message is replaced by a newer one. Both may be nil.
	Observe func(key string, m *Message, o Outcome, took time.Duration)
	Dropped func(key string, m *Message)
	// Log is called when a key starts or stops failing, and on panics.
	Log func(key, msg string, err error)
}

// Sender delivers messages until Close.
type Sender struct {
	cfg    Config
	client *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	queues map[string]*queue
	closed bool
}

type queue struct {
	key     string
	wake    chan struct{}
	pending *Message
	result  Result
	failing bool
}

// New starts a sender. Its connections are kept alive and reused.
func New(cfg Config) *Sender {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 25 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(time.Second, cfg.MinBackoff)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sender{cfg: cfg, ctx: ctx, cancel: cancel, queues: map[string]*queue{}}
	s.client = &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        64,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: cfg.Timeout,
			ForceAttemptHTTP2:   true,
		},
		// Never follow a redirect with a signed body.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

// Send queues m under key, replacing a message of that key not yet sent.
// It never blocks.
func (s *Sender) Send(key string, m Message) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	q := s.queues[key]
	if q == nil {
		q = &queue{key: key, wake: make(chan struct{}, 1)}
		s.queues[key] = q
		s.wg.Add(1)
		go s.loop(q)
	}
	old := q.pending
	if old != nil {
		q.result.Dropped++
	}
	q.pending = &m
	s.mu.Unlock()
	if old != nil && s.cfg.Dropped != nil {
		s.cfg.Dropped(key, old)
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Status returns the last result of key, and whether key was ever used.
func (s *Sender) Status(key string) (Result, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[key]
	if q == nil {
		return Result{}, false
	}
	return q.result, true
}

// Close stops every loop and waits for them; attempts in flight are cancelled.
func (s *Sender) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.client.CloseIdleConnections()
}

func (s *Sender) take(q *queue) *Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := q.pending
	q.pending = nil
	return m
}

// loop delivers the messages of one key, one at a time. A retried message
// waits a capped, doubling backoff, unless a newer one arrives: that one is
// sent at once and the old one dropped.
func (s *Sender) loop(q *queue) {
	defer s.wg.Done()
	var cur *Message
	backoff := time.Duration(0)
	for {
		if cur == nil {
			select {
			case <-s.ctx.Done():
				return
			case <-q.wake:
			}
			if cur = s.take(q); cur == nil {
				continue
			}
		}
		if !s.attempt(q, cur).Retry() {
			cur, backoff = nil, 0
			continue
		}
		backoff = min(max(2*backoff, s.cfg.MinBackoff), s.cfg.MaxBackoff)
		timer := time.NewTimer(backoff)
		select {
		case <-s.ctx.Done():
			timer.Stop()
			return
		case <-q.wake:
			if newer := s.take(q); newer != nil {
				s.mu.Lock()
				q.result.Dropped++
				s.mu.Unlock()
				if s.cfg.Dropped != nil {
					s.cfg.Dropped(q.key, cur)
				}
				cur = newer
			}
		case <-timer.C:
		}
		timer.Stop()
	}
}

// attempt delivers m once and records the result. A panic is recovered and
// gives the message up; the loop goes on.
func (s *Sender) attempt(q *queue, m *Message) (o Outcome) {
	start := time.Now()
	code := 0
	var err error
	defer func() {
		if p := recover(); p != nil {
			o, err = Panicked, fmt.Errorf("panic: %v", p)
		}
		if s.ctx.Err() != nil && !o.Delivered() {
			return // stopping: not a failure of the receiver
		}
		s.record(q, m, o, code, err, start)
	}()
	timeout := s.cfg.Timeout
	if m.Timeout > 0 {
		timeout = m.Timeout
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	if m.Run != nil {
		err = m.Run(ctx)
		switch {
		case err == nil:
			return OK
		case errors.Is(err, ErrRetry):
			return NetworkError
		}
		return Rejected
	}
	code, err = s.post(ctx, m, start)
	if err != nil {
		return NetworkError
	}
	o = Classify(code)
	if !o.Delivered() {
		err = fmt.Errorf("status %d", code)
	}
	return o
}

func (s *Sender) post(ctx context.Context, m *Message, now time.Time) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL, bytes.NewReader(m.Body))
	if err != nil {
		return 0, err
	}
	for k, v := range m.Header {
		req.Header[k] = v
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", s.cfg.UserAgent)
	}
	if m.Sign != nil {
		m.Sign(req, now, m.Body)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	// Read the (small) rest so the connection goes back to the pool.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (s *Sender) record(q *queue, m *Message, o Outcome, code int, err error, start time.Time) {
	took := time.Since(start)
	s.mu.Lock()
	r := &q.result
	r.Delivered, r.At, r.Code, r.Outcome, r.Error = o.Delivered(), start, code, o, ""
	if err != nil && !o.Delivered() {
		r.Error = err.Error()
	}
	if o.Delivered() {
		r.LastOK = start
	} else {
		r.Failures++
	}
	was := q.failing
	q.failing = !o.Delivered()
	s.mu.Unlock()
	if s.cfg.Observe != nil {
		s.cfg.Observe(q.key, m, o, took)
	}
	if s.cfg.Log == nil {
		return
	}
	switch {
	case o == Panicked:
		s.cfg.Log(q.key, "recovered from panic", err)
	case q.failing && !was:
		s.cfg.Log(q.key, "failing ("+string(o)+")", err)
	case !q.failing && was:
		s.cfg.Log(q.key, "recovered", nil)
	}
}
