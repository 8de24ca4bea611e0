// Package testutil holds the few helpers tests across the repository share:
// skipping (or, in CI, failing) when an outside program is missing, and a
// throwaway PostgreSQL server.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequireAllEnv, set to 1, turns every "missing X" skip into a failure so CI
// cannot pass by silently testing nothing.
const RequireAllEnv = "HEALTHSWITCH_REQUIRE_ALL"

// Missing skips the test with why, or fails it when RequireAllEnv is set.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequireAllEnv) == "1" {
		t.Fatalf("%s (and %s=1)", why, RequireAllEnv)
	}
	t.Skip(why)
}

// Need skips (or fails) the test unless every named program is on PATH.
func Need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			Missing(t, "needs "+p+" on PATH")
		}
	}
}

// NeedRoot skips (or fails) the test unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}
