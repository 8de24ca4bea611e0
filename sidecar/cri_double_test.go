package sidecar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"

	"github.com/healthswitch/healthswitch/internal/cridouble"
)

func newCRIDouble(t *testing.T) *cridouble.Runtime {
	t.Helper()
	d, err := cridouble.Start(filepath.Join(t.TempDir(), "cri.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

const (
	criRunning = cridouble.Running
	criExited  = cridouble.Exited
	criStarted = cridouble.Started
	criStopped = cridouble.Stopped
)

func TestPodsCRIEvents(t *testing.T) {
	d := newCRIDouble(t)
	d.Set("c1", "web", criRunning, criStarted, 1)
	d.Set("c2", "sidecar", criRunning, criStarted, 1)
	c := newCheck(t, "preset: pods\npods: {socket: "+d.Sock+", containers: [web]}\ninterval: 5s")
	expect(t, c, true, "2 containers running")
	w := startTraced(t, watchPods, c, "cri events")

	n := w.wakes.Load()
	d.Set("c1", "web", criExited, criStopped, 10)
	w.after(t, n, "a wake on web's STOPPED event")
	expect(t, c, false, "container web (pod p) is CONTAINER_EXITED")

	n = w.wakes.Load()
	d.Set("c1", "web", criRunning, criStarted, 20)
	w.after(t, n, "a wake on web's STARTED event")
	expect(t, c, true, "2 containers running")

	// Events of other containers, and events not newer than the last one
	// applied for a container, wake nothing. A later event shows the
	// watch still ran through them.
	n = w.wakes.Load()
	d.Set("c2", "sidecar", criExited, criStopped, 30)
	d.Set("c1", "web", criExited, criStopped, 15) // older than 20: replayed or reordered
	d.Set("c1", "web", criRunning, criStarted, 40)
	w.after(t, n, "a wake on web's newest event")
	if got := w.wakes.Load(); got != n+1 {
		t.Errorf("%d wakes for one newer event among ignored ones, want 1", got-n)
	}

	// The runtime ends the stream (it restarted): the watch wakes the
	// check, opens a new stream and wakes it again to relist.
	n = w.wakes.Load()
	d.EndStreams()
	w.after(t, n+1, "two wakes: stream gone, stream back")
	waitStreams(t, d, 1)
	n = w.wakes.Load()
	d.Set("c1", "web", criExited, criStopped, 50)
	w.after(t, n, "events after the stream was opened again")
	expect(t, c, false, "container web (pod p) is CONTAINER_EXITED")
}

func waitStreams(t *testing.T, d *cridouble.Runtime, n int) {
	t.Helper()
	testutil.WaitFor(t, 2*time.Second, fmt.Sprintf("%d event streams open", n), func() bool { return d.StreamCount() == n })
}

// A runtime that ends the event stream at once (cri-o without
// enable_pod_events=true) has no events: the watch does not start, and the
// check still lists containers over the same socket.
func TestPodsCRIWithoutEvents(t *testing.T) {
	d := newCRIDouble(t)
	d.NoEvents()
	d.Set("c1", "web", criRunning, criStarted, 1)
	c := newCheck(t, "preset: pods\npods: {socket: "+d.Sock+"}\ninterval: 5s")
	err := watchPods(context.Background(), c, func() {})
	if !errors.Is(err, errCannotWatch) {
		t.Fatalf("watch = %v, want errCannotWatch", err)
	}
	expect(t, c, true, "1 containers running")
}

func TestPodsCRINoSocket(t *testing.T) {
	c := newCheck(t, "preset: pods\npods: {socket: /nonexistent/cri.sock}\ninterval: 5s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := watchPods(ctx, c, func() {}); err == nil || ctx.Err() != nil {
		t.Fatalf("watch on a missing socket = %v (ctx %v), want an error before the deadline", err, ctx.Err())
	}
	expect(t, c, false, "cri ListContainers")
}

// The check lists over one kept connection; when the runtime restarts, the
// run that finds it gone is down, and the first run after it is back is up:
// no wait for gRPC's reconnection backoff.
func TestPodsCRIRuntimeRestart(t *testing.T) {
	d := newCRIDouble(t)
	d.Set("c1", "web", criRunning, criStarted, 1)
	c := newCheck(t, "preset: pods\npods: {socket: "+d.Sock+"}\ninterval: 5s")
	t.Cleanup(c.Close)
	expect(t, c, true, "1 containers running")
	expect(t, c, true, "1 containers running")
	d.Close()
	expect(t, c, false, "cri ListContainers")
	os.Remove(d.Sock) // a unix socket's file stays after its server
	again, err := cridouble.Start(d.Sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Close)
	again.Set("c1", "web", criRunning, criStarted, 2)
	for range 3 { // each run right after the other: none may wait out a backoff
		expect(t, c, true, "1 containers running")
	}
}

// With neither socket nor command, the check lists over the first usual
// CRI socket that exists, without forking crictl; where none exists it
// forks crictl.
func TestPodsDefaultSocket(t *testing.T) {
	d := newCRIDouble(t)
	d.Set("c1", "web", criRunning, criStarted, 1)
	saved := criDefaultSockets
	t.Cleanup(func() { criDefaultSockets = saved })
	criDefaultSockets = []string{filepath.Join(t.TempDir(), "absent.sock"), d.Sock}
	c := newCheck(t, "preset: pods\ninterval: 5s")
	t.Cleanup(c.Close)
	onPath(t, t.TempDir(), func() { expect(t, c, true, "1 containers running") })

	criDefaultSockets = []string{filepath.Join(t.TempDir(), "absent.sock")}
	onPath(t, t.TempDir(), func() { expect(t, c, false, "crictl") })
}
