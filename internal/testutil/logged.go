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
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, log.String())
		}
	})
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
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(path)
			t.Logf("%s output:\n%s", name, b)
		}
	})
}
