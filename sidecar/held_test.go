package sidecar

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	err := redactErr(&wrapped{"dial: user probe password hunter2: refused", io.EOF}, "", "hunter2")
	if got, want := err.Error(), "dial: user probe password xxxxx: refused"; got != want {
		t.Errorf("redact = %q, want %q", got, want)
	}
	if !errors.Is(err, io.EOF) {
		t.Error("redact lost the wrapped error")
	}
	if redactErr(nil, "x") != nil {
		t.Error("redactErr(nil) is not nil")
	}
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// holdLoop's wake rules, session by session: "up" holds a connection that
// then breaks, "down" cannot open one, "none" is a server without the
// source. The script ends by cancelling the context.
func TestHoldLoopWakes(t *testing.T) {
	tests := []struct {
		name, script string
		wakes        int
		err          error
	}{
		{"held until shutdown", "up", 0, context.Canceled},
		{"broke, reconnected", "up up", 2, context.Canceled}, // the break; the new connection
		{"broke, server gone a while, back", "up down down down up", 3, context.Canceled},
		{"down from the start, then up", "down down up", 2, context.Canceled},
		{"no source", "none", 0, errNoSource{io.EOF}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			steps := strings.Fields(tt.script)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wakes, i := 0, 0
			err := holdLoop(ctx, func() { wakes++ }, func(ctx context.Context, ready func()) error {
				step := steps[i]
				i++
				last := i == len(steps)
				switch step {
				case "none":
					return errNoSource{io.EOF}
				case "up":
					ready()
				}
				if last {
					cancel()
				}
				return io.EOF
			})
			if wakes != tt.wakes || !errors.Is(err, tt.err) && err != tt.err {
				t.Errorf("wakes %d, err %v; want %d, %v", wakes, err, tt.wakes, tt.err)
			}
		})
	}
}
