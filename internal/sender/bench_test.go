package sender

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkDeliver: from Send to the receiver having the message, over the
// sender's kept-alive connection, beside a baseline POST that opens a fresh
// connection each time (what a sender without connection reuse pays).
func BenchmarkDeliver(b *testing.B) {
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		got <- struct{}{}
	}))
	defer srv.Close()
	body := bytes.Repeat([]byte("x"), 512)
	b.Run("sender", func(b *testing.B) {
		s := New(Config{})
		defer s.Close()
		for b.Loop() {
			s.Send("k", Message{URL: srv.URL, Body: body})
			select {
			case <-got:
			case <-time.After(5 * time.Second):
				b.Fatal("not delivered")
			}
		}
	})
	b.Run("fresh-connection", func(b *testing.B) {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		for b.Loop() {
			resp, err := c.Post(srv.URL, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			<-got
		}
	})
}
