// Package report is the wire contract between the healthswitch sidecar and the
// CoreDNS plugin: the health report, its JSON form, and how it is signed.
//
// A report is signed with HMAC-SHA256 over the decimal unix-millisecond
// timestamp, a newline, and the exact body bytes. The receiver verifies the
// signature against the key of the cluster named in the body, so a sidecar can
// only speak for its own cluster.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Version is the only report and notification version this package speaks.
const Version = 1

// MaxBodySize bounds a report body; receivers answer 413 past it.
const MaxBodySize = 64 << 10

// Report is what a sidecar pushes about its cluster.
type Report struct {
	Version    int       `json:"version"`
	Cluster    string    `json:"cluster"`
	BootID     string    `json:"boot_id"`
	Sequence   uint64    `json:"sequence"`
	SentAt     time.Time `json:"sent_at"`
	Healthy    bool      `json:"healthy"`
	IntervalMS int64     `json:"interval_ms"`
	Checks     []Check   `json:"checks,omitempty"`
}

// Check is the result of one sidecar check as carried in a report.
type Check struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`
	Healthy    bool      `json:"healthy"`
	Critical   bool      `json:"critical"`
	ObservedAt time.Time `json:"observed_at"`
	DurationMS float64   `json:"duration_ms"`
	Detail     string    `json:"detail,omitempty"`
}

// Notification is what the plugin POSTs to a cluster's notify URL when it
// stops or resumes sending traffic there.
type Notification struct {
	Version int       `json:"version"`
	Cluster string    `json:"cluster"`
	Action  string    `json:"action"` // ActionStop or ActionResume
	Reason  string    `json:"reason"`
	Epoch   uint64    `json:"epoch"`
	At      time.Time `json:"at"`
}

// ClusterName is what a cluster may be called: the Corefile's rule, so a
// sidecar config naming a cluster no DNS server can have is refused where
// it is written, not answered 404 on every push.
var ClusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// Notification actions.
const (
	ActionStop   = "stop"
	ActionResume = "resume"
)

// ErrMalformed wraps every decoding and validation failure of Decode.
var ErrMalformed = errors.New("malformed report")

// Decode parses and validates a report body with DecodeStrict: unknown,
// case-variant and repeated members and trailing data are refused, so a typo
// in a hand-written report ("Healthy") is an error, not a silently healthy
// cluster.
func Decode(body []byte) (Report, error) {
	var r Report
	if err := DecodeStrict(body, &r); err != nil {
		return Report{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := r.Validate(); err != nil {
		return Report{}, err
	}
	return r, nil
}

// Validate checks the fields every receiver relies on.
func (r *Report) Validate() error {
	switch {
	case r.Version != Version:
		return fmt.Errorf("%w: version %d, want %d", ErrMalformed, r.Version, Version)
	case r.Cluster == "":
		return fmt.Errorf("%w: cluster is empty", ErrMalformed)
	case r.BootID == "":
		return fmt.Errorf("%w: boot_id is empty", ErrMalformed)
	case r.Sequence == 0:
		return fmt.Errorf("%w: sequence must be at least 1", ErrMalformed)
	case r.IntervalMS < 0:
		return fmt.Errorf("%w: interval_ms is negative", ErrMalformed)
	}
	return nil
}

// Encode returns the JSON body of a report.
func (r *Report) Encode() ([]byte, error) { return json.Marshal(r) }
