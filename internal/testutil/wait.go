package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond every millisecond until it holds, and fails the test
// naming what it waited for once within has passed. It is the one way tests
// here wait: never a fixed sleep.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(time.Millisecond)
	}
}
