package testutil

import (
	"bytes"
	"os/exec"
	"testing"
)

// StartLogged starts cmd with its output kept, and at cleanup kills it,
// waits for it, and shows the output when the test failed.
func StartLogged(t testing.TB, name string, cmd *exec.Cmd) {
	t.Helper()
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, log.String())
		}
	})
}
