package testutil

import (
	"bytes"
	"os"
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
	stopAtCleanup(t, name, cmd, log.Bytes)
}

// StartLoggedFile is StartLogged with the output going to the file path,
// which the test can read while the command runs.
func StartLoggedFile(t testing.TB, name string, cmd *exec.Cmd, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Start()
	f.Close() // the child has its own
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, name, cmd, func() []byte { b, _ := os.ReadFile(path); return b })
}

// stopAtCleanup kills cmd at cleanup, waits for it, and shows its output
// when the test failed.
func stopAtCleanup(t testing.TB, name string, cmd *exec.Cmd, output func() []byte) {
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, output())
		}
	})
}
