package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/report"
)

// Event is one state transition as GET /v1/events shows it.
type Event struct {
	Cluster    string    `json:"cluster"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Reason     string    `json:"reason"`
	Epoch      uint64    `json:"epoch"`
	ObservedAt time.Time `json:"observed_at"`
	ReceivedAt time.Time `json:"received_at"`
	AppliedAt  time.Time `json:"applied_at"`
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// Events fetches the DNS server's recent transitions.
func Events(api string) ([]Event, error) {
	var doc struct {
		Events []Event `json:"events"`
	}
	if err := getJSON(base(api)+"/v1/events", &doc); err != nil {
		return nil, err
	}
	return doc.Events, nil
}

// Status is the part of GET /v1/status the demo reads.
type Status struct {
	Epoch    uint64 `json:"epoch"`
	Clusters []struct {
		Name   string `json:"name"`
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"clusters"`
	Names []struct {
		Name string   `json:"name"`
		A    []string `json:"a"`
	} `json:"names"`
}

// ClusterState is the state of one cluster, "" when it is not listed.
func (s *Status) ClusterState(name string) string {
	for _, c := range s.Clusters {
		if c.Name == name {
			return c.State
		}
	}
	return ""
}

// GetStatus fetches GET /v1/status.
func GetStatus(api string) (*Status, error) {
	var st Status
	return &st, getJSON(base(api)+"/v1/status", &st)
}

// base accepts a push API as host:port or as a URL.
func base(api string) string {
	if strings.Contains(api, "://") {
		return api
	}
	return "http://" + api
}

func getJSON(url string, v any) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// EventWatcher returns each transition once, polling /v1/events.
type EventWatcher struct {
	API  string
	last uint64
}

// Skip marks every event already recorded as seen.
func (w *EventWatcher) Skip() error {
	evs, err := Events(w.API)
	for _, e := range evs {
		w.last = max(w.last, e.Epoch)
	}
	return err
}

// Poll returns the transitions not returned before. A server that restarted
// (its epochs start again) is read from its beginning.
func (w *EventWatcher) Poll() ([]Event, error) {
	evs, err := Events(w.API)
	if err != nil {
		return nil, err
	}
	var top uint64
	for _, e := range evs {
		top = max(top, e.Epoch)
	}
	if top < w.last {
		w.last = 0
	}
	var out []Event
	for _, e := range evs {
		if e.Epoch > w.last {
			out = append(out, e)
		}
	}
	w.last = max(w.last, top)
	return out, nil
}

// Resolver asks one DNS server for A records.
type Resolver struct {
	Addr string
	udp  dns.Client
	tcp  dns.Client
}

// NewResolver queries addr (host:port) with a short timeout.
func NewResolver(addr string) *Resolver {
	return &Resolver{Addr: addr,
		udp: dns.Client{Net: "udp", Timeout: 500 * time.Millisecond, UDPSize: dns.DefaultMsgSize},
		tcp: dns.Client{Net: "tcp", Timeout: time.Second}}
}

// A returns the sorted A addresses of name, retrying over TCP when the UDP
// answer is truncated.
func (r *Resolver) A(name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.SetEdns0(dns.DefaultMsgSize, false)
	in, _, err := r.udp.Exchange(m, r.Addr)
	if err == nil && in.Truncated {
		in, _, err = r.tcp.Exchange(m, r.Addr)
	}
	if err != nil {
		return nil, err
	}
	if in.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s: %s", name, dns.RcodeToString[in.Rcode])
	}
	var ips []string
	for _, rr := range in.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return ips, nil
}

// Answer is A as one space-separated string, "error: ..." on failure.
func (r *Resolver) Answer(name string) string {
	ips, err := r.A(name)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.Join(ips, " ")
}

// WaitAnswer polls until name answers want (space-separated, sorted).
func (r *Resolver) WaitAnswer(ctx context.Context, name, want string) error {
	last := ""
	for {
		if last = r.Answer(name); last == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s answers %q, want %q: %w", name, last, want, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Pusher signs and posts reports for one cluster, as a sidecar does. Not
// safe for concurrent use: sequences must rise.
type Pusher struct {
	API, Cluster, Boot string
	Key                []byte
	Client             *http.Client
	seq                uint64
}

// Push sends one report and returns the HTTP status.
func (p *Pusher) Push(healthy bool) (int, error) {
	p.seq++
	now := time.Now()
	r := report.Report{Version: report.Version, Cluster: p.Cluster, BootID: p.Boot, Sequence: p.seq,
		SentAt: now.UTC(), Healthy: healthy, IntervalMS: 100,
		Checks: []report.Check{{Name: "web", Kind: "http", Healthy: healthy, Critical: true, ObservedAt: now.UTC()}}}
	body, err := r.Encode()
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodPost, base(p.API)+"/v1/report", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	report.SignRequest(req, p.Key, now, body)
	c := p.Client
	if c == nil {
		c = httpClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
