package hysteresis

import "testing"

func TestCounter(t *testing.T) {
	tests := []struct {
		name       string
		fall, rise int
		results    string // '+' success, '-' failure
		want       string // state after each result: U unknown, u up, d down
	}{
		{"first success confirms", 2, 2, "+", "u"},
		{"unknown needs fall failures", 2, 2, "--", "Ud"},
		{"fall of one", 1, 1, "-+", "du"},
		{"rise needs consecutive successes", 2, 3, "--++-+++", "Uddddddu"},
		{"isolated failure does not flap", 3, 1, "+-+--+", "uuuuuu"},
		{"zero thresholds act as one", 0, 0, "-+", "du"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.fall, tc.rise)
			got := make([]byte, 0, len(tc.results))
			for _, r := range tc.results {
				s, _ := c.Observe(r == '+')
				got = append(got, map[State]byte{Unknown: 'U', Up: 'u', Down: 'd'}[s])
			}
			if string(got) != tc.want {
				t.Errorf("states = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestObserveReportsChange(t *testing.T) {
	c := New(1, 1)
	if _, changed := c.Observe(true); !changed {
		t.Error("unknown to up: changed = false")
	}
	if _, changed := c.Observe(true); changed {
		t.Error("up to up: changed = true")
	}
	if s, changed := c.Observe(false); !changed || s != Down {
		t.Errorf("up to down: state %v changed %v", s, changed)
	}
}
