package sidecar

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

func TestVMWatchLifecycle(t *testing.T) {
	d := testutil.StartLibvirtd(t)
	c := newCheck(t, "preset: vm\nvm: {uri: '"+d.URI+"', domains: [test]}\ninterval: 5s")
	w := startTraced(t, watchVM, c, "libvirt events") // its connection keeps the test driver's state
	expect(t, c, true, "1 domains running")

	n := w.wakes.Load()
	d.Virsh("destroy", "test")
	w.after(t, n, "a lifecycle event after virsh destroy")
	expect(t, c, false, "domain test is shut off")

	n = w.wakes.Load()
	d.Virsh("start", "test")
	w.after(t, n, "a lifecycle event after virsh start")
	expect(t, c, true, "1 domains running")

	// The daemon restarts: the watch wakes the check when it goes and again
	// once it has reconnected, and events flow again.
	n = w.wakes.Load()
	d.Kill()
	w.after(t, n, "a wake when libvirtd went away")
	expect(t, c, false, "libvirt test:///default")
	d.Start()
	w.after(t, n+1, "a wake once the watch reconnected")
	n = w.wakes.Load()
	d.Virsh("destroy", "test")
	w.after(t, n, "a lifecycle event after the reconnect")
	expect(t, c, false, "domain test is shut off")
}

// With a daemon socket the vm preset reads domains over it, without virsh
// (no program on PATH at all), on one kept connection, and names states as
// virsh does.
func TestVMNativeRead(t *testing.T) {
	d := testutil.StartLibvirtd(t)
	c := newCheck(t, "preset: vm\nvm: {uri: '"+d.URI+"', domains: [test]}\ninterval: 5s")
	t.Cleanup(c.Close) // its connection keeps the test driver's state between runs
	withoutPath := func(f func()) { onPath(t, t.TempDir(), f) }
	withoutPath(func() { expect(t, c, true, "1 domains running") })
	d.Virsh("suspend", "test")
	withoutPath(func() { expect(t, c, false, "domain test is paused") })
	d.Virsh("resume", "test")
	d.Virsh("destroy", "test")
	withoutPath(func() { expect(t, c, false, "domain test is shut off") })
	d.Virsh("start", "test")
	withoutPath(func() { expect(t, c, true, "1 domains running") })

	every := newCheck(t, "preset: vm\nvm: {uri: '"+d.URI+"'}\ninterval: 5s")
	t.Cleanup(every.Close)
	expect(t, every, true, "1 domains running")
	missing := newCheck(t, "preset: vm\nvm: {uri: '"+d.URI+"', domains: [test, worker-2]}\ninterval: 5s")
	t.Cleanup(missing.Close)
	expect(t, missing, false, "domain worker-2 not found")

	// The daemon goes away: down, naming libvirt; back: the next run
	// connects again.
	d.Kill()
	expect(t, c, false, "libvirt test:///default")
	d.Start()
	testutil.WaitFor(t, 5*time.Second, "the check passes once libvirtd is back", func() bool { return c.Run(t.Context()).Healthy })

	// Restarted between two runs: the connection kept from the last run
	// is dead, but the restart is over, so the next run passes.
	d.Kill()
	d.Start()
	expect(t, c, true, "1 domains running")
}

func TestVMWatchWithoutDaemon(t *testing.T) {
	for _, uri := range []string{"test:///default", "qemu+ssh://node/system", "qemu:///session", "test+unix:///default?socket=/nonexistent/sock"} {
		c := newCheck(t, "preset: vm\nvm: {uri: '"+uri+"'}\ninterval: 5s")
		err := watchVM(context.Background(), c, func() {})
		if err == nil {
			t.Errorf("%s: the watch started; want an error so the check polls virsh", uri)
		}
		if uri != "test+unix:///default?socket=/nonexistent/sock" && !errors.Is(err, errCannotWatch) {
			t.Errorf("%s: %v, want errCannotWatch", uri, err)
		}
	}
}
