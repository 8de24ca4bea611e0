package healthswitch

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// GET /v1/events/stream: the transitions of /v1/events as Server-Sent Events,
// live. A reader that falls behind is dropped, never waited for: the engine
// hands each event to a small per-reader buffer without blocking, and a full
// buffer ends that reader's stream. Its EventSource reconnects with
// Last-Event-ID and catches up from the recent-events ring.

const (
	streamPath         = "/v1/events/stream"
	subscriberBuffer   = 64              // events a reader may lag behind before it is dropped
	maxSubscribers     = 128             // per server block; more get 503
	streamWriteTimeout = 2 * time.Second // a write blocked longer ends the stream
	streamRetry        = 1000            // ms an EventSource waits before reconnecting
)

// keepAliveEvery spaces the comment lines that keep idle streams (and the
// proxies in front of them) from timing out. A variable for tests.
var keepAliveEvery = 15 * time.Second

// attachHub feeds every transition to hb, lets hb read the recent-events
// ring atomically with adding a reader (no gap, no duplicate between backlog
// and live events), and hands hb the channel closed when this engine stops
// (Corefile reload or shutdown), which ends its streams.
func (e *engine) attachHub(hb *hub) {
	hb.done = e.done
	hb.recent = e.eventsThen
	e.onTransition(hb.publish) // publish never blocks
}

// hub fans transitions out to the stream's readers.
type hub struct {
	done   <-chan struct{}
	recent func(after uint64, add func()) ([]Event, uint64) // the ring after an epoch, and that epoch as applied

	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	events  chan *frame
	dropped chan struct{} // closed when the reader fell subscriberBuffer events behind
}

func newHub() *hub { return &hub{subs: map[*subscriber]struct{}{}} }

// frame is one event as written to every reader, encoded once.
type frame struct {
	ev   Event
	once sync.Once
	text []byte
}

func (f *frame) bytes() []byte {
	f.once.Do(func() {
		b, _ := json.Marshal(f.ev)
		f.text = fmt.Appendf(nil, "id: %d\nevent: transition\ndata: %s\n\n", f.ev.Epoch, b)
	})
	return f.text
}

// publish never blocks: a reader whose buffer is full is dropped.
func (hb *hub) publish(ev Event) {
	f := &frame{ev: ev}
	hb.mu.Lock()
	defer hb.mu.Unlock()
	for s := range hb.subs {
		select {
		case s.events <- f:
		default:
			hb.remove(s)
			close(s.dropped)
			streamDropped.Inc()
		}
	}
}

// subscribe adds a reader and returns the recent transitions after epoch
// after, and the epoch it resumes from (0 for an id from before a restart);
// ok is false when the hub is full.
func (hb *hub) subscribe(after uint64) (s *subscriber, backlog []Event, from uint64, ok bool) {
	s = &subscriber{events: make(chan *frame, subscriberBuffer), dropped: make(chan struct{})}
	backlog, from = hb.recent(after, func() {
		hb.mu.Lock()
		defer hb.mu.Unlock()
		if ok = len(hb.subs) < maxSubscribers; ok {
			hb.subs[s] = struct{}{}
			streamSubscribers.Inc()
		}
	})
	return s, backlog, from, ok
}

func (hb *hub) unsubscribe(s *subscriber) {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	hb.remove(s)
}

// remove is called with hb.mu held.
func (hb *hub) remove(s *subscriber) {
	if _, ok := hb.subs[s]; ok {
		delete(hb.subs, s)
		streamSubscribers.Dec()
	}
}

func (hb *hub) count() int {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return len(hb.subs)
}

// isStream tells the API's in-flight limit to let streams by: they are long
// lived and bounded by maxSubscribers instead.
func isStream(r *http.Request) bool { return r.URL.Path == streamPath }

// resumeFrom is the epoch a stream starts after: the Last-Event-ID an
// EventSource sends on reconnect, else ?since=EPOCH, else now (no backlog).
func resumeFrom(r *http.Request) (after uint64, backlog bool, err error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("since")
	}
	if v == "" {
		return 0, false, nil
	}
	after, err = strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("event id %q is not an epoch", v)
	}
	return after, true, nil
}

func (hb *hub) handleStream(w http.ResponseWriter, r *http.Request) {
	after, withBacklog, err := resumeFrom(r)
	if err != nil {
		writeError(w, reject(http.StatusBadRequest, "malformed", "%v", err))
		return
	}
	s, backlog, after, ok := hb.subscribe(after)
	if !ok {
		writeError(w, reject(http.StatusServiceUnavailable, "busy", "too many event stream readers"))
		return
	}
	defer hb.unsubscribe(s)
	if !withBacklog {
		backlog = nil
	}
	rc := http.NewResponseController(w)
	// The listener's read timeout would cancel the request mid-stream; writes
	// get their own deadline below.
	rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: rc, last: after}
	if !sw.write(fmt.Appendf(nil, "retry: %d\n\n", streamRetry)) {
		return
	}
	for _, ev := range backlog {
		if !sw.event(&frame{ev: ev}) {
			return
		}
	}
	keepAlive := time.NewTicker(keepAliveEvery)
	defer keepAlive.Stop()
	for {
		select {
		case f := <-s.events:
			if !sw.event(f) {
				return
			}
		case <-keepAlive.C:
			if !sw.write([]byte(": keep-alive\n\n")) {
				return
			}
		case <-s.dropped:
			return
		case <-hb.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// sseWriter writes one stream; every write must finish within
// streamWriteTimeout.
type sseWriter struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	last uint64
}

func (sw *sseWriter) event(f *frame) bool {
	if f.ev.Epoch <= sw.last {
		return true
	}
	sw.last = f.ev.Epoch
	return sw.write(f.bytes())
}

func (sw *sseWriter) write(b []byte) bool {
	sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := sw.w.Write(b); err != nil {
		return false
	}
	return sw.rc.Flush() == nil
}
