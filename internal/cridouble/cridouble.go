// Package cridouble is a TEST DOUBLE of a container runtime: it serves the
// real k8s.io/cri-api RuntimeService gRPC protocol on a unix socket, with
// ListContainers and GetContainerEvents only. No runtime that streams
// container events can run on this machine (no cri-o, no containerd), so
// the sidecar's tests and the bench drive this instead. It is not a runtime:
// containers are whatever Set says they are.
package cridouble

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Shorthands for the states and event types a double's callers use.
const (
	Running = runtimeapi.ContainerState_CONTAINER_RUNNING
	Exited  = runtimeapi.ContainerState_CONTAINER_EXITED
	Started = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
	Stopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
)

// Runtime is the double; Sock is the unix socket it serves on.
type Runtime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	Sock string
	srv  *grpc.Server

	mu         sync.Mutex
	containers map[string]*runtimeapi.Container // by id
	streams    map[chan *runtimeapi.ContainerEventResponse]chan struct{}
	noEvents   bool
}

// Start serves a double on the unix socket sock until Close.
func Start(sock string) (*Runtime, error) {
	d := &Runtime{Sock: sock,
		containers: map[string]*runtimeapi.Container{},
		streams:    map[chan *runtimeapi.ContainerEventResponse]chan struct{}{}}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	d.srv = grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(d.srv, d)
	go d.srv.Serve(l)
	return d, nil
}

// Close stops serving and ends every stream.
func (d *Runtime) Close() { d.srv.Stop() }

// NoEvents makes every event stream end at once, as cri-o does without
// enable_pod_events.
func (d *Runtime) NoEvents() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noEvents = true
}

func (d *Runtime) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	resp := &runtimeapi.ListContainersResponse{}
	for _, c := range d.containers {
		resp.Containers = append(resp.Containers, c)
	}
	return resp, nil
}

func (d *Runtime) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
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

// Set puts a container (of pod "p") in a state and sends its event to every
// stream, stamped at (CreatedAt, nanoseconds), as a runtime does when it
// changes.
func (d *Runtime) Set(id, name string, state runtimeapi.ContainerState, typ runtimeapi.ContainerEventType, at int64) {
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

// EndStreams ends every open event stream, as a runtime restart would.
func (d *Runtime) EndStreams() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch, end := range d.streams {
		close(end)
		delete(d.streams, ch)
	}
}

// StreamCount is the number of open event streams.
func (d *Runtime) StreamCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.streams)
}
