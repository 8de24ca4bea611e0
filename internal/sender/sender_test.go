package sender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// The one retry policy: which statuses are done, given up, or retried.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		code      int
		want      Outcome
		delivered bool
		retry     bool
	}{
		{200, OK, true, false},
		{204, OK, true, false},
		{299, OK, true, false},
		{409, Conflict, true, false}, // a replay: the receiver has it
		{301, Rejected, false, false},
		{400, Rejected, false, false},
		{401, Rejected, false, false},
		{403, Rejected, false, false},
		{404, Rejected, false, false},
		{413, Rejected, false, false},
		{408, ServerError, false, true},
		{425, ServerError, false, true},
		{429, ServerError, false, true},
		{500, ServerError, false, true},
		{502, ServerError, false, true},
		{503, ServerError, false, true},
		{504, ServerError, false, true},
	} {
		o := Classify(tc.code)
		if o != tc.want || o.Delivered() != tc.delivered || o.Retry() != tc.retry {
			t.Errorf("status %d: %s (delivered %v, retry %v), want %s (%v, %v)", tc.code, o, o.Delivered(), o.Retry(), tc.want, tc.delivered, tc.retry)
		}
	}
	if !NetworkError.Retry() || NetworkError.Delivered() || Panicked.Retry() {
		t.Error("network errors must be retried, panics given up")
	}
}

// receiver answers with the status in code and records delivered bodies.
type receiver struct {
	srv   *httptest.Server
	code  atomic.Int64
	mu    sync.Mutex
	got   []string // bodies answered with 2xx
	stamp []string // X-Stamp of every request
	conns atomic.Int64
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.code.Store(200)
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		code := int(r.code.Load())
		r.mu.Lock()
		r.stamp = append(r.stamp, req.Header.Get("X-Stamp"))
		if code/100 == 2 {
			r.got = append(r.got, string(b))
		}
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	r.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) delivered() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func newSender(t *testing.T, cfg Config) *Sender {
	s := New(cfg)
	t.Cleanup(s.Close)
	return s
}

// A dead receiver that comes back gets the newest message only, not a FIFO
// backlog of stale ones; the messages in between are counted as dropped.
func TestDeadReceiverGetsNewestOnly(t *testing.T) {
	r := newReceiver(t)
	r.code.Store(503)
	var dropped atomic.Int64
	s := newSender(t, Config{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Dropped: func(string, *Message) { dropped.Add(1) }})
	for i := 1; i <= 50; i++ {
		s.Send("peer east", Message{URL: r.srv.URL, Body: []byte(strconv.Itoa(i))})
	}
	testutil.WaitFor(t, 2*time.Second, "retries against the dead receiver", func() bool {
		res, _ := s.Status("peer east")
		return res.Failures >= 3
	})
	r.code.Store(204)
	testutil.WaitFor(t, 2*time.Second, "the newest message delivered", func() bool {
		res, _ := s.Status("peer east")
		return res.Delivered
	})
	if got := r.delivered(); len(got) != 1 || got[0] != "50" {
		t.Fatalf("delivered %q, want only the newest [50]", got)
	}
	res, _ := s.Status("peer east")
	if res.Code != 204 || res.Outcome != OK || res.LastOK.IsZero() || res.Dropped != 49 || dropped.Load() != 49 {
		t.Errorf("status %+v, dropped callback %d; want code 204, 49 dropped", res, dropped.Load())
	}
}

// Keys are independent: per cluster, a message for one does not replace
// another's.
func TestKeysIndependent(t *testing.T) {
	r := newReceiver(t)
	s := newSender(t, Config{})
	s.Send("peer east", Message{URL: r.srv.URL, Body: []byte("east")})
	s.Send("peer west", Message{URL: r.srv.URL, Body: []byte("west")})
	testutil.WaitFor(t, 2*time.Second, "both delivered", func() bool { return len(r.delivered()) == 2 })
	if _, ok := s.Status("peer north"); ok {
		t.Error("status of a key never used")
	}
}

// Given-up statuses are not retried; a 409 counts as delivered.
func TestGiveUpAndConflict(t *testing.T) {
	r := newReceiver(t)
	r.code.Store(401)
	var attempts atomic.Int64
	s := newSender(t, Config{MinBackoff: time.Millisecond, Observe: func(string, *Message, Outcome, time.Duration) { attempts.Add(1) }})
	s.Send("k", Message{URL: r.srv.URL, Body: []byte("x")})
	testutil.WaitFor(t, 2*time.Second, "an attempt", func() bool { return attempts.Load() == 1 })
	res, _ := s.Status("k")
	if res.Delivered || res.Code != 401 || res.Outcome != Rejected || res.Error == "" {
		t.Errorf("after 401: %+v", res)
	}
	r.code.Store(409)
	s.Send("k", Message{URL: r.srv.URL, Body: []byte("y")})
	testutil.WaitFor(t, 2*time.Second, "a second attempt", func() bool { return attempts.Load() == 2 })
	if res, _ := s.Status("k"); !res.Delivered || res.Code != 409 || res.Outcome != Conflict {
		t.Errorf("after 409: %+v", res)
	}
	// Neither was retried.
	r.mu.Lock()
	n := len(r.stamp)
	r.mu.Unlock()
	if n != 2 || attempts.Load() != 2 {
		t.Errorf("%d requests, %d attempts; want 2", n, attempts.Load())
	}
}

// Every attempt is signed anew, so a retry carries a fresh timestamp.
func TestSignedAtEachAttempt(t *testing.T) {
	r := newReceiver(t)
	r.code.Store(500)
	var n atomic.Int64
	sign := func(req *http.Request, now time.Time, body []byte) {
		req.Header.Set("X-Stamp", fmt.Sprintf("%d-%s", n.Add(1), body))
	}
	s := newSender(t, Config{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	s.Send("k", Message{URL: r.srv.URL, Body: []byte("b"), Sign: sign})
	testutil.WaitFor(t, 2*time.Second, "three attempts", func() bool { return n.Load() >= 3 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stamp[0] != "1-b" || r.stamp[1] != "2-b" {
		t.Errorf("stamps %q: each attempt must be signed anew", r.stamp[:2])
	}
}

// Successive messages leave at once over the one kept-alive connection.
func TestConnectionReused(t *testing.T) {
	r := newReceiver(t)
	s := newSender(t, Config{})
	for i := range 5 {
		s.Send("k", Message{URL: r.srv.URL, Body: []byte(strconv.Itoa(i))})
		testutil.WaitFor(t, 2*time.Second, "delivery", func() bool { return len(r.delivered()) == i+1 })
	}
	if c := r.conns.Load(); c != 1 {
		t.Errorf("%d connections for 5 messages, want 1 kept alive", c)
	}
}

// A panicking delivery is recovered; the key's loop goes on.
func TestPanicRecovered(t *testing.T) {
	var logged atomic.Int64
	s := newSender(t, Config{Log: func(key, msg string, err error) {
		if msg == "recovered from panic" {
			logged.Add(1)
		}
	}})
	s.Send("hook", Message{Run: func(context.Context) error { panic("boom") }})
	testutil.WaitFor(t, 2*time.Second, "the panic recorded", func() bool {
		res, _ := s.Status("hook")
		return res.Outcome == Panicked
	})
	ran := make(chan struct{})
	s.Send("hook", Message{Run: func(context.Context) error { close(ran); return nil }})
	select {
	case <-ran:
	case <-time.After(2 * time.Second):
		t.Fatal("the loop did not go on after a panic")
	}
	testutil.WaitFor(t, 2*time.Second, "delivered", func() bool { res, _ := s.Status("hook"); return res.Delivered })
	if logged.Load() != 1 {
		t.Errorf("panic logged %d times", logged.Load())
	}
}

// Run errors: ErrRetry is retried, others given up.
func TestRunRetry(t *testing.T) {
	var n atomic.Int64
	s := newSender(t, Config{MinBackoff: time.Millisecond})
	s.Send("hook", Message{Run: func(context.Context) error {
		if n.Add(1) < 3 {
			return fmt.Errorf("busy: %w", ErrRetry)
		}
		return nil
	}})
	testutil.WaitFor(t, 2*time.Second, "delivered on the third run", func() bool { res, _ := s.Status("hook"); return res.Delivered })
	s.Send("hook2", Message{Run: func(context.Context) error { n.Add(100); return errors.New("exit status 1") }})
	testutil.WaitFor(t, 2*time.Second, "given up", func() bool { res, _ := s.Status("hook2"); return res.Outcome == Rejected })
	if n.Load() != 103 {
		t.Errorf("runs %d, want 3 + one given up", n.Load())
	}
}

// Under flapping, per key the last message sent is the last delivered: the
// one in flight finishes, the pending ones are replaced by the newest.
func TestNewestWinsUnderFlapping(t *testing.T) {
	var mu sync.Mutex
	var ran []int
	release := make(chan struct{})
	s := newSender(t, Config{})
	run := func(i int) func(context.Context) error {
		return func(context.Context) error {
			if i == 0 {
				<-release
			}
			mu.Lock()
			ran = append(ran, i)
			mu.Unlock()
			return nil
		}
	}
	s.Send("hook", Message{Run: run(0)})
	testutil.WaitFor(t, time.Second, "first in flight", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.queues["hook"].pending == nil })
	for i := 1; i <= 9; i++ {
		s.Send("hook", Message{Run: run(i)})
	}
	close(release)
	testutil.WaitFor(t, 2*time.Second, "the last run", func() bool { mu.Lock(); defer mu.Unlock(); return len(ran) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if ran[0] != 0 || ran[1] != 9 {
		t.Errorf("ran %v, want [0 9]", ran)
	}
}

// Close stops the loops; later sends are ignored.
func TestClose(t *testing.T) {
	r := newReceiver(t)
	r.code.Store(503)
	s := New(Config{MinBackoff: time.Millisecond})
	s.Send("k", Message{URL: r.srv.URL})
	testutil.WaitFor(t, time.Second, "an attempt", func() bool { res, _ := s.Status("k"); return res.Failures > 0 })
	s.Close()
	s.Send("k", Message{URL: r.srv.URL})
	s.Send("new", Message{URL: r.srv.URL})
	if _, ok := s.Status("new"); ok {
		t.Error("a send after Close queued")
	}
}
