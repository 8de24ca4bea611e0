package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criDefaultSockets are where container runtimes put their CRI socket, in
// the order crictl tries them.
var criDefaultSockets = []string{"/run/containerd/containerd.sock", "/run/crio/crio.sock", "/var/run/cri-dockerd.sock"}

// criQuietStart: a stream that ends this soon after it opened was refused,
// not broken. cri-o without enable_pod_events=true ends it at once.
const criQuietStart = 300 * time.Millisecond

// criDial connects to a CRI runtime socket (a path or unix:// URL). The
// connection is lazy: errors show on the first call.
func criDial(endpoint string) (*grpc.ClientConn, runtimeapi.RuntimeServiceClient, error) {
	path := strings.TrimPrefix(endpoint, "unix://")
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("cri %s: %w", endpoint, err)
	}
	return conn, runtimeapi.NewRuntimeServiceClient(conn), nil
}

// criContainers lists every container of the runtime, as crictl ps -a would,
// over the check's kept connection. On an error the connection is dropped
// and the next run dials again, rather than waiting out gRPC's own
// reconnection backoff (up to minutes) after a runtime restart.
func (s *PodsSpec) criContainers(ctx context.Context, endpoint string) ([]container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.endpoint != endpoint {
		s.closeLocked()
	}
	if s.conn == nil {
		conn, rt, err := criDial(endpoint)
		if err != nil {
			return nil, err
		}
		s.conn, s.rt, s.endpoint = conn, rt, endpoint
	}
	resp, err := s.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		s.closeLocked()
		return nil, fmt.Errorf("cri ListContainers: %w", err)
	}
	list := make([]container, 0, len(resp.Containers))
	for _, c := range resp.Containers {
		ct := container{State: c.State.String(), Pod: c.Labels["io.kubernetes.pod.name"]}
		if c.Metadata != nil {
			ct.Name, ct.Attempt = c.Metadata.Name, int(c.Metadata.Attempt)
		}
		list = append(list, ct)
	}
	return list, nil
}

func (s *PodsSpec) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

func (s *PodsSpec) closeLocked() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn, s.rt = nil, nil
	}
}

// criEndpoint is the socket the pods preset watches: the configured one, or
// the first default socket that exists.
func criEndpoint(s *PodsSpec) (string, error) {
	if s.Socket != "" {
		return s.Socket, nil
	}
	for _, p := range criDefaultSockets {
		if exists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: no CRI socket (set pods.socket; looked for %s)", errCannotWatch, strings.Join(criDefaultSockets, ", "))
}

// watchPods is the pods preset's event source: the runtime's
// GetContainerEvents stream. The CRI offers no filter, so every container
// event of the node arrives; those of containers the check does not name
// are dropped here, and so is an event not newer than the last one seen for
// its container (the kubelet's evented PLEG learned that streams can
// repeat and reorder). The check then lists the containers and decides.
//
// A runtime that ends the stream at once has no events (cri-o without
// enable_pod_events=true): the watch does not start and the check polls.
// A stream that breaks later is opened again with backoff, and the check is
// woken to relist whatever changed meanwhile.
func watchPods(ctx context.Context, c *Check, wake func()) error {
	endpoint, err := criEndpoint(c.Pods)
	if err != nil {
		return err
	}
	conn, rt, err := criDial(endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	w := &criWatch{rt: rt, names: c.Pods.Containers, seen: map[string]int64{}, wake: wake}
	events, cancel, err := w.open(ctx)
	if err != nil {
		return err
	}
	traced(c, "cri events")
	backoff := watchBackoff(c, connBackoff)
	for {
		w.follow(ctx, events)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		wake() // the stream broke: look now
		for {
			if !backoff.wait(ctx) {
				return nil
			}
			if events, cancel, err = w.open(ctx); err == nil {
				backoff.reset()
				traced(c, "cri events")
				wake() // relist after the gap
				break
			}
		}
	}
}

type criWatch struct {
	rt    runtimeapi.RuntimeServiceClient
	names []string
	seen  map[string]int64 // container id → CreatedAt of the newest event applied
	wake  func()
}

// criRecv is one result of the stream's Recv.
type criRecv struct {
	ev  *runtimeapi.ContainerEventResponse
	err error
}

// open starts a stream, read by its own goroutine until it ends or ctx
// does, and waits criQuietStart for it to prove it stays open: one that
// ends (or fails) in that time was refused.
func (w *criWatch) open(ctx context.Context) (<-chan criRecv, context.CancelFunc, error) {
	sctx, cancel := context.WithCancel(ctx)
	stream, err := w.rt.GetContainerEvents(sctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("cri GetContainerEvents: %w", err)
	}
	events := make(chan criRecv, 16)
	go func() {
		for {
			ev, err := stream.Recv()
			select {
			case events <- criRecv{ev, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	t := time.NewTimer(criQuietStart)
	defer t.Stop()
	select {
	case r := <-events:
		if r.err == nil {
			w.apply(r.ev) // an event at once: the stream works
			return events, cancel, nil
		}
		cancel()
		if errors.Is(r.err, io.EOF) {
			return nil, nil, fmt.Errorf("%w: the runtime ended its container event stream at once (cri-o needs enable_pod_events=true)", errCannotWatch)
		}
		return nil, nil, fmt.Errorf("cri GetContainerEvents: %w", r.err)
	case <-t.C:
		return events, cancel, nil // quiet and open: it works
	}
}

// follow applies events until the stream ends or ctx does.
func (w *criWatch) follow(ctx context.Context, events <-chan criRecv) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-events:
			if r.err != nil {
				return
			}
			w.apply(r.ev)
		}
	}
}

func (w *criWatch) apply(ev *runtimeapi.ContainerEventResponse) {
	if at, ok := w.seen[ev.ContainerId]; ok && ev.CreatedAt <= at {
		return // not newer than what was applied for this container
	}
	w.seen[ev.ContainerId] = ev.CreatedAt
	if ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
		delete(w.seen, ev.ContainerId)
	}
	if len(w.names) == 0 {
		w.wake()
		return
	}
	for _, st := range ev.ContainersStatuses {
		if st.Metadata != nil && st.Id == ev.ContainerId && slices.Contains(w.names, st.Metadata.Name) {
			w.wake()
			return
		}
	}
}
