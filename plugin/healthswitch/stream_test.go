package healthswitch

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coredns/caddy"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

// sseFrame is one event of a Server-Sent Events stream.
type sseFrame struct {
	id, event string
	data      string
}

// sseReader reads frames from a stream; comments are skipped.
type sseReader struct{ r *bufio.Reader }

func (s *sseReader) next() (sseFrame, error) {
	var f sseFrame
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if f.event != "" || f.data != "" {
				return f, nil
			}
		case strings.HasPrefix(line, "id: "):
			f.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			f.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			f.data = line[6:]
		}
	}
}

func (s *sseReader) event(t *testing.T) Event {
	t.Helper()
	f, err := s.next()
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	var ev Event
	if err := json.Unmarshal([]byte(f.data), &ev); err != nil {
		t.Fatalf("event %q: %v", f.data, err)
	}
	if f.event != "transition" || f.id != strconv.FormatUint(ev.Epoch, 10) {
		t.Fatalf("frame %+v: want event transition, id = epoch", f)
	}
	return ev
}

// openStream connects to the stream and returns once the server has
// subscribed the reader.
func openStream(t *testing.T, base, lastID string) (*http.Response, *sseReader) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+streamPath, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp, &sseReader{bufio.NewReader(resp.Body)}
}

func flip(t *testing.T, h *HealthSwitch, seq uint64) {
	t.Helper()
	if rec := post(t, h, "/v1/report", body(t, "east", "b", seq, seq%2 == 0), pushKey, time.Now()); rec.Code != http.StatusNoContent {
		t.Fatalf("report %d: %d %s", seq, rec.Code, rec.Body)
	}
}

// Events arrive in order, each once, while reports flip a cluster; a reader
// that falls behind and is dropped resumes with Last-Event-ID, as an
// EventSource does, and misses nothing.
func TestStreamEventsInOrder(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	srv := httptest.NewServer(h.api)
	t.Cleanup(srv.Close)
	const n = 3 * subscriberBuffer
	got := make(chan Event, n)
	_, s := openStream(t, srv.URL, "")
	go func() {
		defer close(got)
		var last uint64
		for received := 0; received < n; {
			f, err := s.next()
			if err != nil { // dropped: reconnect from the last id seen
				resp, err := http.Get(srv.URL + streamPath + "?since=" + strconv.FormatUint(last, 10))
				if err != nil {
					return
				}
				defer resp.Body.Close()
				s = &sseReader{bufio.NewReader(resp.Body)}
				continue
			}
			var ev Event
			json.Unmarshal([]byte(f.data), &ev)
			if f.id != strconv.FormatUint(ev.Epoch, 10) {
				t.Errorf("frame id %s for epoch %d", f.id, ev.Epoch)
			}
			last = ev.Epoch
			received++
			got <- ev
		}
	}()
	for seq := uint64(1); seq <= n; seq++ {
		flip(t, h, seq)
	}
	var last uint64
	for i := 1; i <= n; i++ {
		var ev Event
		select {
		case ev = <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d of %d did not arrive", i, n)
		}
		want := StateDown
		if i%2 == 0 {
			want = StateUp
		}
		if ev.Cluster != "east" || ev.To != want || ev.Epoch <= last || ev.ReceivedAt.IsZero() || ev.AppliedAt.IsZero() {
			t.Fatalf("event %d: %+v after epoch %d, want east -> %s", i, ev, last, want)
		}
		last = ev.Epoch
	}
}

// A reconnecting EventSource sends Last-Event-ID and gets what it missed
// from the recent-events ring, then live events, without a gap or a repeat.
func TestStreamResumesFromLastEventID(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	srv := httptest.NewServer(h.api)
	t.Cleanup(srv.Close)
	for seq := uint64(1); seq <= 3; seq++ {
		flip(t, h, seq)
	}
	h.engine.mu.Lock()
	ring := append([]Event(nil), h.engine.events...)
	h.engine.mu.Unlock()
	_, s := openStream(t, srv.URL, strconv.FormatUint(ring[0].Epoch, 10))
	for _, want := range ring[1:] {
		if ev := s.event(t); ev.Epoch != want.Epoch || ev.To != want.To {
			t.Fatalf("resumed with %+v, want %+v", ev, want)
		}
	}
	flip(t, h, 4)
	if ev := s.event(t); ev.Epoch <= ring[2].Epoch || ev.To != StateUp {
		t.Fatalf("live event after the backlog: %+v", ev)
	}

	// Without an id or ?since the stream starts now.
	_, fresh := openStream(t, srv.URL, "")
	flip(t, h, 5)
	if ev := fresh.event(t); ev.To != StateDown {
		t.Fatalf("first event of a new stream: %+v, want the live one", ev)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+streamPath, nil)
	req.Header.Set("Last-Event-ID", "yesterday")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed Last-Event-ID: %v %v", resp.StatusCode, err)
	}
}

// The engine hands events over without waiting: a reader that does not keep
// up is dropped once its buffer is full, and the others keep theirs.
func TestStreamDropsSlowReader(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	hb := newHub()
	h.engine.attachHub(hb)
	slow, _, _, _ := hb.subscribe(0)
	fast, _, _, _ := hb.subscribe(0)
	start := time.Now()
	for seq := uint64(1); seq <= 2*subscriberBuffer; seq++ {
		flip(t, h, seq)
		select {
		case <-fast.events:
		default:
			t.Fatalf("report %d: no event for the reader that keeps up", seq)
		}
		select {
		case <-slow.dropped:
			if seq <= subscriberBuffer {
				t.Fatalf("slow reader dropped at event %d, before its %d-event buffer was full", seq, subscriberBuffer)
			}
		default:
			if seq > subscriberBuffer {
				t.Fatalf("slow reader still subscribed after %d unread events", seq)
			}
		}
	}
	if n := hb.count(); n != 1 {
		t.Errorf("%d readers left, want the fast one", n)
	}
	t.Logf("%d reports with a stalled reader took %v", 2*subscriberBuffer, time.Since(start))
}

// Stopping the instance (Corefile reload or shutdown) ends its streams
// cleanly: the body ends, not with an error.
func TestStreamEndsOnStop(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	srv := httptest.NewServer(h.api)
	t.Cleanup(srv.Close)
	resp, _ := openStream(t, srv.URL, "")
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	h.stop()
	select {
	case err := <-ended:
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("stream ended with %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("stream still open 2s after the instance stopped")
	}
}

func TestStreamKeepAlive(t *testing.T) {
	defer func(d time.Duration) { keepAliveEvery = d }(keepAliveEvery)
	keepAliveEvery = 20 * time.Millisecond
	h := newPushHS(t, "stale 1h")
	srv := httptest.NewServer(h.api)
	t.Cleanup(srv.Close)
	resp, _ := openStream(t, srv.URL, "")
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": keep-alive\n" {
			return
		}
	}
}

// The push API listener has 5s read and write timeouts for reports; a
// stream outlives both.
func TestStreamOutlivesListenerTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a stream open for 6s")
	}
	defer func(d time.Duration) { keepAliveEvery = d }(keepAliveEvery)
	keepAliveEvery = 6 * time.Second
	h := newPushHS(t, "stale 1h")
	sl, err := listen("127.0.0.1:0", nil, h.cfg.api)
	if err != nil {
		t.Fatal(err)
	}
	sl.current.Store(h)
	t.Cleanup(func() { sl.ln.Close(); sl.srv.Close() })
	_, s := openStream(t, "http://"+sl.boundAddr, "")
	start := time.Now()
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %v: %v", time.Since(start), err)
		}
		if line == ": keep-alive\n" {
			break
		}
	}
	flip(t, h, 1)
	if ev := s.event(t); ev.To != StateDown {
		t.Fatalf("event after %v: %+v", time.Since(start), ev)
	}
}

// stalledConn opens a stream over TCP that never reads a byte, with a small
// receive buffer, so that the server's writes soon block.
func stalledConn(t testing.TB, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", streamPath, addr)
	return c
}

// A reader over a real connection that stops reading is disconnected once
// the socket buffers and its event buffer are full, while reports go on.
func TestStreamDropsStalledConnection(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	sl, err := listen("127.0.0.1:0", nil, h.cfg.api)
	if err != nil {
		t.Fatal(err)
	}
	sl.current.Store(h)
	t.Cleanup(func() { sl.ln.Close(); sl.srv.Close() })
	stalledConn(t, sl.boundAddr)
	dropped := promtest.ToFloat64(streamDropped)
	// Large events (a long check detail) fill the socket buffers sooner.
	detail := strings.Repeat("x", 8<<10)
	var seq uint64
	var sent int
	testutil.WaitFor(t, 60*time.Second, "the stalled reader to be dropped", func() bool {
		seq++
		r := report.Report{Version: 1, Cluster: "east", BootID: "b", Sequence: seq, SentAt: time.Now().UTC(), Healthy: seq%2 == 0, IntervalMS: 100}
		if !r.Healthy {
			r.Checks = []report.Check{{Name: "web", Kind: "http", Critical: true, ObservedAt: time.Now().UTC(), Detail: detail}}
		}
		b, _ := r.Encode()
		if rec := post(t, h, "/v1/report", b, pushKey, time.Now()); rec.Code != http.StatusNoContent {
			t.Fatalf("report %d: %d %s", seq, rec.Code, rec.Body)
		}
		sent += len(b)
		return promtest.ToFloat64(streamDropped) > dropped
	})
	t.Logf("stalled reader dropped after %d reports (%d KiB of events)", seq, sent>>10)
}

// BenchmarkReportWithStalledReaders: a report that flips a cluster, with 0
// and with 100 stream readers that never read, over real connections.
func BenchmarkReportWithStalledReaders(b *testing.B) {
	for _, readers := range []int{0, 100} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			key := filepath.Join(b.TempDir(), "key")
			os.WriteFile(key, pushKey, 0o600)
			c := caddy.NewTestController("dns", fmt.Sprintf("healthswitch {\n cluster east 192.0.2.10 {\n  key_file %s\n }\n cluster west 198.51.100.10\n stale 1h\n limits 4096 128 8\n}", key))
			c.ServerBlockKeys = []string{"svc1.net.:53"}
			cfg, err := parse(c)
			if err != nil {
				b.Fatal(err)
			}
			h := newHealthSwitch(cfg)
			sl, err := listen("127.0.0.1:0", nil, h.cfg.api)
			if err != nil {
				b.Fatal(err)
			}
			sl.current.Store(h)
			base := promtest.ToFloat64(streamSubscribers)
			b.Cleanup(func() { sl.ln.Close(); sl.srv.Close() })
			for range readers {
				stalledConn(b, sl.boundAddr)
			}
			deadline := time.Now().Add(10 * time.Second)
			for promtest.ToFloat64(streamSubscribers)-base < float64(readers) {
				if time.Now().After(deadline) {
					b.Fatalf("%v of %d readers subscribed", promtest.ToFloat64(streamSubscribers), readers)
				}
				time.Sleep(time.Millisecond)
			}
			var seq uint64
			b.ReportAllocs()
			for b.Loop() {
				seq++
				r := report.Report{Version: 1, Cluster: "east", BootID: "b", Sequence: seq, SentAt: time.Now().UTC(), Healthy: seq%2 == 0, IntervalMS: 100}
				body, _ := r.Encode()
				req := httptest.NewRequest(http.MethodPost, "/v1/report", strings.NewReader(string(body)))
				report.SignRequest(req, pushKey, time.Now(), body)
				rec := httptest.NewRecorder()
				h.api.ServeHTTP(rec, req)
				if rec.Code != http.StatusNoContent {
					b.Fatalf("report %d: %d %s", seq, rec.Code, rec.Body)
				}
			}
		})
	}
}

// A Last-Event-ID from before the DNS server restarted (epochs start over)
// gets every recent transition, not nothing.
func TestStreamResumeAcrossRestart(t *testing.T) {
	h := newPushHS(t, "stale 1h")
	srv := httptest.NewServer(h.api)
	t.Cleanup(srv.Close)
	flip(t, h, 1)
	_, s := openStream(t, srv.URL, "999999")
	if ev := s.event(t); ev.To != StateDown || ev.Cluster != "east" {
		t.Fatalf("resumed with %+v, want the ring's east -> down", ev)
	}
}
