package sidecar

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criRuntimeDouble is a TEST DOUBLE of a container runtime: it serves the
// real k8s.io/cri-api RuntimeService gRPC protocol on a unix socket, with
// ListContainers and GetContainerEvents only. No runtime that streams
// container events can run on this machine (no cri-o, no containerd), so
// the tests drive this instead.
type criRuntimeDouble struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	sock string

	mu         sync.Mutex
	containers map[string]*runtimeapi.Container // by id
	streams    map[chan *runtimeapi.ContainerEventResponse]chan struct{}
	noEvents   bool // end every stream at once, as cri-o does without enable_pod_events
}

func newCRIDouble(t *testing.T) *criRuntimeDouble {
	t.Helper()
	d := &criRuntimeDouble{sock: filepath.Join(t.TempDir(), "cri.sock"),
		containers: map[string]*runtimeapi.Container{},
		streams:    map[chan *runtimeapi.ContainerEventResponse]chan struct{}{}}
	l, err := net.Listen("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, d)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return d
}

func (d *criRuntimeDouble) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	resp := &runtimeapi.ListContainersResponse{}
	for _, c := range d.containers {
		resp.Containers = append(resp.Containers, c)
	}
	return resp, nil
}

func (d *criRuntimeDouble) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	d.mu.Lock()
	if d.noEvents {
		d.mu.Unlock()
		return nil
	}
	ch, end := make(chan *runtimeapi.ContainerEventResponse, 64), make(chan struct{})
	d.streams[ch] = end
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.streams, ch)
		d.mu.Unlock()
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-end:
			return nil
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// set puts a container in a state and sends its event to every stream,
// stamped at, as a runtime does when it changes.
func (d *criRuntimeDouble) set(id, name string, state runtimeapi.ContainerState, typ runtimeapi.ContainerEventType, at int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	meta := &runtimeapi.ContainerMetadata{Name: name}
	d.containers[id] = &runtimeapi.Container{Id: id, Metadata: meta, State: state, Labels: map[string]string{"io.kubernetes.pod.name": "p"}}
	ev := &runtimeapi.ContainerEventResponse{ContainerId: id, ContainerEventType: typ, CreatedAt: at,
		ContainersStatuses: []*runtimeapi.ContainerStatus{{Id: id, Metadata: meta, State: state}}}
	for ch := range d.streams {
		ch <- ev
	}
}

// endStreams ends every open event stream, as a runtime restart would.
func (d *criRuntimeDouble) endStreams() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch, end := range d.streams {
		close(end)
		delete(d.streams, ch)
	}
}

func (d *criRuntimeDouble) streamCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.streams)
}

const (
	criRunning = runtimeapi.ContainerState_CONTAINER_RUNNING
	criExited  = runtimeapi.ContainerState_CONTAINER_EXITED
	criStarted = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
	criStopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
)

func TestPodsCRIEvents(t *testing.T) {
	d := newCRIDouble(t)
	d.set("c1", "web", criRunning, criStarted, 1)
	d.set("c2", "sidecar", criRunning, criStarted, 1)
	c := newCheck(t, "preset: pods\npods: {socket: "+d.sock+", containers: [web]}\ninterval: 5s")
	expect(t, c, true, "2 containers running")
	w := startTraced(t, watchPods, c, "cri events")

	n := w.wakes.Load()
	d.set("c1", "web", criExited, criStopped, 10)
	w.after(t, n, "a wake on web's STOPPED event")
	expect(t, c, false, "container web (pod p) is CONTAINER_EXITED")

	n = w.wakes.Load()
	d.set("c1", "web", criRunning, criStarted, 20)
	w.after(t, n, "a wake on web's STARTED event")
	expect(t, c, true, "2 containers running")

	// Events of other containers, and events not newer than the last one
	// applied for a container, wake nothing. A later event shows the
	// watch still ran through them.
	n = w.wakes.Load()
	d.set("c2", "sidecar", criExited, criStopped, 30)
	d.set("c1", "web", criExited, criStopped, 15) // older than 20: replayed or reordered
	d.set("c1", "web", criRunning, criStarted, 40)
	w.after(t, n, "a wake on web's newest event")
	if got := w.wakes.Load(); got != n+1 {
		t.Errorf("%d wakes for one newer event among ignored ones, want 1", got-n)
	}

	// The runtime ends the stream (it restarted): the watch wakes the
	// check, opens a new stream and wakes it again to relist.
	n = w.wakes.Load()
	d.endStreams()
	w.after(t, n+1, "two wakes: stream gone, stream back")
	waitStreams(t, d, 1)
	n = w.wakes.Load()
	d.set("c1", "web", criExited, criStopped, 50)
	w.after(t, n, "events after the stream was opened again")
	expect(t, c, false, "container web (pod p) is CONTAINER_EXITED")
}

func waitStreams(t *testing.T, d *criRuntimeDouble, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for d.streamCount() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d event streams open, want %d", d.streamCount(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A runtime that ends the event stream at once (cri-o without
// enable_pod_events=true) has no events: the watch does not start, and the
// check still lists containers over the same socket.
func TestPodsCRIWithoutEvents(t *testing.T) {
	d := newCRIDouble(t)
	d.noEvents = true
	d.set("c1", "web", criRunning, criStarted, 1)
	c := newCheck(t, "preset: pods\npods: {socket: "+d.sock+"}\ninterval: 5s")
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
