package healthswitch

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
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
	slow, _, _ := hb.subscribe(0)
	fast, _, _ := hb.subscribe(0)
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
