// Package hysteresis turns a stream of pass/fail results into a stable state:
// it takes Fall consecutive failures to go down and Rise consecutive successes
// to come back. Both the plugin's active probes and the sidecar's checks use it.
package hysteresis

// State is a target's debounced health.
type State int8

// States. Unknown lasts until the first result decides.
const (
	Unknown State = iota
	Up
	Down
)

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "unknown"
}

// Counter is not safe for concurrent use; each target owns one.
type Counter struct {
	Fall, Rise int // thresholds, at least 1

	state     State
	successes int
	failures  int
}

// New returns a counter in state Unknown.
func New(fall, rise int) *Counter {
	if fall < 1 {
		fall = 1
	}
	if rise < 1 {
		rise = 1
	}
	return &Counter{Fall: fall, Rise: rise}
}

// State returns the current debounced state.
func (c *Counter) State() State { return c.state }

// Observe records one result and reports whether the state changed. An Unknown
// target counts as up, as the plugin treats it: one success confirms it, Fall
// failures take it down. A blip at start-up is not an outage.
func (c *Counter) Observe(ok bool) (State, bool) {
	prev := c.state
	if ok {
		c.successes++
		c.failures = 0
		if c.state == Unknown || (c.state == Down && c.successes >= c.Rise) {
			c.state = Up
		}
	} else {
		c.failures++
		c.successes = 0
		if c.state != Down && c.failures >= c.Fall {
			c.state = Down
		}
	}
	return c.state, c.state != prev
}
