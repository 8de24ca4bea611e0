package healthswitch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// on_down and on_up run commands with the transition in their environment.
func TestHooksRunOnTransitions(t *testing.T) {
	out := filepath.Join(t.TempDir(), "hook.log")
	script := filepath.Join(t.TempDir(), "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$HEALTHSWITCH_CLUSTER $HEALTHSWITCH_ACTION $HEALTHSWITCH_STATE $1\" >> "+out+"\n"), 0o755)
	h := newTestHS(t, "cluster east 192.0.2.10 {\n key_file KEY\n on_down "+script+" \"two words\"\n on_up "+script+" up\n}\nstale 1h")
	h.engine.startBackground()
	t.Cleanup(h.engine.stopBackground)
	post(t, h, "/v1/report", body(t, "east", "b", 1, false), pushKey, time.Now())
	testutil.WaitFor(t, 5*time.Second, "the on_down hook", func() bool {
		b, _ := os.ReadFile(out)
		return string(b) == "east stop down two words\n"
	})
	post(t, h, "/v1/report", body(t, "east", "b", 2, true), pushKey, time.Now())
	want := "east stop down two words\neast resume up up\n"
	testutil.WaitFor(t, 5*time.Second, "the on_up hook", func() bool {
		b, _ := os.ReadFile(out)
		if strings.Count(string(b), "\n") > 2 {
			t.Fatalf("hook ran too often: %q", b)
		}
		return string(b) == want
	})
}
