package healthswitch

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

// guarded starts h's push API on a loopback port behind the connection
// guard, as the plugin binds it.
func guarded(t *testing.T, h *HealthSwitch) string {
	t.Helper()
	sl, err := listen("127.0.0.1:0", nil, h.cfg.api)
	if err != nil {
		t.Fatal(err)
	}
	sl.current.Store(h)
	t.Cleanup(func() { sl.srv.Close() })
	return sl.boundAddr
}

// dialFrom connects to addr from a chosen loopback source address (all of
// 127.0.0.0/8 is local on Linux), as a distinct client would.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedSoon reports whether the server closes c within d without writing.
func closedSoon(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || (err != nil && !strings.Contains(err.Error(), "timeout"))
}

// statusOf reads the status code of the response on c.
func statusOf(t *testing.T, c net.Conn, within time.Duration) int {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func signedReport(t *testing.T, addr string, seq uint64) int {
	t.Helper()
	b := body(t, "east", "b1", seq, true)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/report", bytes.NewReader(b))
	report.SignRequest(req, pushKey, time.Now(), b)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func dropped(reason string) float64  { return counterValue(apiConnsDropped.WithLabelValues(reason)) }
func rejected(reason string) float64 { return counterValue(reportsRejected.WithLabelValues(reason)) }

// One source address holds at most PER_SOURCE connections; the next is
// closed at once, and other sources are not affected.
func TestPerSourceConnectionLimit(t *testing.T) {
	h := newPushHS(t, "limits 100 4 2")
	addr := guarded(t, h)
	before := dropped("per_source")
	for range 4 {
		dialFrom(t, "127.0.0.2", addr)
	}
	fifth := dialFrom(t, "127.0.0.2", addr)
	if !closedSoon(fifth, time.Second) {
		t.Error("a fifth connection from one source was kept open")
	}
	if got := dropped("per_source") - before; got != 1 {
		t.Errorf("per_source drops %v, want 1", got)
	}
	if code := signedReport(t, addr, 1); code != 204 {
		t.Errorf("signed report from another source: %d", code)
	}
}

// A body must arrive at the minimum rate: a trickle gets 408, and holds no
// slot a signed report needs meanwhile.
func TestSlowBody(t *testing.T) {
	h := newPushHS(t, "")
	addr := guarded(t, h)
	before := rejected("slow_body")
	c := dialFrom(t, "127.0.0.2", addr)
	fmt.Fprintf(c, "POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{")
	if code := signedReport(t, addr, 1); code != 204 {
		t.Errorf("signed report while a body trickles: %d", code)
	}
	start := time.Now()
	if code := statusOf(t, c, 3*time.Second); code != http.StatusRequestTimeout {
		t.Errorf("slow body: %d, want 408", code)
	}
	if took, limit := time.Since(start), bodyDeadline(200); took > limit+500*time.Millisecond {
		t.Errorf("slow body cut after %s, limit %s", took, limit)
	}
	if rejected("slow_body")-before != 1 {
		t.Error("slow_body not counted")
	}
}

// One source has at most PER_SOURCE_REQUESTS bodies in flight: the next
// gets 429.
func TestPerSourceRequestLimit(t *testing.T) {
	h := newPushHS(t, "limits 100 8 2")
	addr := guarded(t, h)
	for range 2 {
		fmt.Fprintf(dialFrom(t, "127.0.0.3", addr), "POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n{")
	}
	testutil.WaitFor(t, 2*time.Second, "two bodies in flight", func() bool {
		h.gate.inflight.mu.Lock()
		defer h.gate.inflight.mu.Unlock()
		return h.gate.inflight.n["127.0.0.3"] == 2
	})
	third := dialFrom(t, "127.0.0.3", addr)
	fmt.Fprintf(third, "POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
	if code := statusOf(t, third, 2*time.Second); code != http.StatusTooManyRequests {
		t.Errorf("third body from one source: %d, want 429", code)
	}
	if code := signedReport(t, addr, 1); code != 204 {
		t.Errorf("signed report from another source: %d", code)
	}
}

// Content-Length is required and bounded.
func TestBodyLengthRules(t *testing.T) {
	h := newPushHS(t, "")
	addr := guarded(t, h)
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"chunked", "POST /v1/report HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", 411},
		{"too large", fmt.Sprintf("POST /v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", report.MaxBodySize+1), 413},
	} {
		c := dialFrom(t, "127.0.0.4", addr)
		io.WriteString(c, tc.req)
		if code := statusOf(t, c, 2*time.Second); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
}

// At MAX_CONNECTIONS the oldest connection that never carried a verified
// request is closed for the new one; a sidecar's verified keep-alive
// connection stays.
func TestEvictsUnverifiedConnections(t *testing.T) {
	h := newPushHS(t, "limits 4 4 2")
	addr := guarded(t, h)
	sidecar := dialFrom(t, "127.0.0.1", addr)
	rd := bufio.NewReader(sidecar)
	send := func(seq uint64) int {
		b := body(t, "east", "b1", seq, true)
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/report", bytes.NewReader(b))
		report.SignRequest(req, pushKey, time.Now(), b)
		req.Write(sidecar)
		sidecar.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(rd, req)
		if err != nil {
			t.Fatalf("report %d on the kept connection: %v", seq, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(1); code != 204 {
		t.Fatalf("first report: %d", code)
	}
	before := dropped("evicted")
	idle := []net.Conn{}
	for i := range 6 {
		idle = append(idle, dialFrom(t, fmt.Sprintf("127.0.1.%d", i+1), addr))
	}
	if !closedSoon(idle[0], time.Second) || !closedSoon(idle[1], time.Second) {
		t.Error("the oldest unverified connections were not evicted")
	}
	testutil.WaitFor(t, 2*time.Second, "3 evictions (4 slots: the sidecar and the 3 newest)", func() bool { return dropped("evicted")-before == 3 })
	if code := send(2); code != 204 {
		t.Errorf("report on the verified connection after evictions: %d", code)
	}
}

// A source that sent a verified request is exempt from the per-source
// limits: a peer forwarding for many clusters at once is not one client.
func TestVerifiedSourceExemptFromPerSourceLimits(t *testing.T) {
	h := newPushHS(t, "limits 100 2 1")
	addr := guarded(t, h)
	c := dialFrom(t, "127.0.0.5", addr)
	b := body(t, "east", "b1", 1, true)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/report", bytes.NewReader(b))
	report.SignRequest(req, pushKey, time.Now(), b)
	req.Write(c)
	if code := statusOf(t, c, 2*time.Second); code != 204 {
		t.Fatalf("verified report: %d", code)
	}
	var open []net.Conn
	for range 4 {
		open = append(open, dialFrom(t, "127.0.0.5", addr))
	}
	for i, oc := range open {
		if closedSoon(oc, 200*time.Millisecond) {
			t.Errorf("connection %d of a verified source was closed", i+3)
		}
	}
	// An unverified source is held to PER_SOURCE.
	dialFrom(t, "127.0.0.6", addr)
	dialFrom(t, "127.0.0.6", addr)
	if !closedSoon(dialFrom(t, "127.0.0.6", addr), time.Second) {
		t.Error("a third connection of an unverified source was kept")
	}
}
