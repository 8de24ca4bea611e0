package sidecar

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a duration in the YAML as Go writes it: "100ms", "2s", "1m".
// A text that is not one is kept for validation, whose error names the field
// and the check it belongs to.
type Duration struct {
	time.Duration
	bad string // the text as written, when it is not a duration
}

// UnmarshalYAML takes a scalar; validation judges it.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 100ms or 2s", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		*d = Duration{bad: n.Value}
		return nil
	}
	*d = Duration{Duration: v}
	return nil
}

// MarshalYAML writes the duration back as Go writes it.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Bounds of the durations and counters of a config. An interval under 10 ms
// is a busy loop, not a health check; past an hour, not a failover.
const (
	MinInterval  = 10 * time.Millisecond
	MaxInterval  = time.Hour
	MinTimeout   = time.Millisecond
	MinHeartbeat = 10 * time.Millisecond
	MaxHeartbeat = time.Minute
	MaxFallRise  = 100
)

// within validates a duration field against [lo, hi].
func (d Duration) within(field string, lo, hi time.Duration) error {
	switch {
	case d.bad != "":
		return fmt.Errorf("%s: %q is not a duration (e.g. 100ms, 2s)", field, d.bad)
	case d.Duration <= 0:
		return fmt.Errorf("%s: %s must be positive", field, d.Duration)
	case d.Duration < lo || d.Duration > hi:
		return fmt.Errorf("%s: %s is out of range [%s, %s]", field, d.Duration, lo, hi)
	}
	return nil
}
