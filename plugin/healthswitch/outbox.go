package healthswitch

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// outbox sends POSTs to one URL in the background, in order, with retries.
// It holds at most `size` pending messages and drops the oldest past that, so
// a dead receiver never makes anything wait or grow. With size 1 the newest
// message wins.
type outbox struct {
	url    string
	kind   string // metric label: notify or peer
	client *http.Client
	ch     chan message
	done   <-chan struct{}

	mu       sync.Mutex
	lastErr  string
	lastOK   time.Time
	failures uint64
	dropped  uint64
}

type message struct {
	body []byte
	hdr  http.Header
	path string // appended to the outbox URL
}

const outboxAttempts = 4

func newOutbox(url, kind string, size int, client *http.Client, done <-chan struct{}) *outbox {
	o := &outbox{url: url, kind: kind, client: client, ch: make(chan message, size), done: done}
	go o.run()
	return o
}

func (o *outbox) send(m message) {
	for {
		select {
		case o.ch <- m:
			return
		default:
		}
		select {
		case <-o.ch: // drop the oldest
			o.mu.Lock()
			o.dropped++
			o.mu.Unlock()
			notifications.WithLabelValues(o.kind, "dropped").Inc()
		default:
		}
	}
}

func (o *outbox) run() {
	defer func() {
		if r := recover(); r != nil {
			log.Errorf("%s %s: panic: %v", o.kind, o.url, r)
		}
	}()
	for {
		select {
		case <-o.done:
			return
		case m := <-o.ch:
			o.deliver(m)
		}
	}
}

// deliver tries a message a few times with a growing pause. A newer message
// waiting in a size-1 outbox ends the retries: it supersedes this one.
func (o *outbox) deliver(m message) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := o.post(m)
		o.mu.Lock()
		if err == nil {
			o.lastOK, o.lastErr = time.Now(), ""
		} else {
			o.failures++
			o.lastErr = err.Error()
		}
		o.mu.Unlock()
		if err == nil {
			notifications.WithLabelValues(o.kind, "ok").Inc()
			return
		}
		notifications.WithLabelValues(o.kind, "error").Inc()
		if attempt == outboxAttempts || (cap(o.ch) == 1 && len(o.ch) > 0) {
			log.Warningf("%s %s: giving up after %d attempts: %v", o.kind, o.url, attempt, err)
			return
		}
		select {
		case <-o.done:
			return
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

func (o *outbox) post(m message) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url+m.path, bytes.NewReader(m.body))
	if err != nil {
		return err
	}
	for k, v := range m.hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	// 409 from a peer means it has this report already: delivered.
	if resp.StatusCode/100 == 2 || (o.kind == "peer" && resp.StatusCode == http.StatusConflict) {
		return nil
	}
	return fmt.Errorf("status %d", resp.StatusCode)
}

// outboxStatus is an outbox as shown in /v1/status.
type outboxStatus struct {
	URL      string    `json:"url"`
	LastOK   time.Time `json:"last_ok,omitzero"`
	LastErr  string    `json:"last_error,omitempty"`
	Failures uint64    `json:"failures"`
	Dropped  uint64    `json:"dropped"`
}

func (o *outbox) status() outboxStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	return outboxStatus{URL: o.url, LastOK: o.lastOK, LastErr: o.lastErr, Failures: o.failures, Dropped: o.dropped}
}
