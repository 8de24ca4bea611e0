package sidecar

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// grpcServer is an in-process gRPC server with the standard health service,
// stopped and started again on the same address.
type grpcServer struct {
	addr   string
	health *health.Server
	srv    *grpc.Server
}

func startGRPC(t *testing.T, withHealth bool) *grpcServer {
	t.Helper()
	g := &grpcServer{addr: "127.0.0.1:0", health: health.NewServer()}
	g.health.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	g.start(t, withHealth)
	t.Cleanup(g.stop)
	return g
}

func (g *grpcServer) start(t *testing.T, withHealth bool) {
	t.Helper()
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	g.srv = grpc.NewServer()
	if withHealth {
		healthpb.RegisterHealthServer(g.srv, g.health)
	} else {
		healthpb.RegisterHealthServer(g.srv, checkOnly{g.health})
	}
	go g.srv.Serve(ln)
}

func (g *grpcServer) stop() { g.srv.Stop() }

// checkOnly is a health service without Watch, as some servers have.
type checkOnly struct{ *health.Server }

func (checkOnly) Watch(*healthpb.HealthCheckRequest, healthpb.Health_WatchServer) error {
	return healthpb.UnimplementedHealthServer{}.Watch(nil, nil)
}

func TestGRPCCheck(t *testing.T) {
	g := startGRPC(t, true)
	c := newCheck(t, "grpc: {address: '"+g.addr+"', service: orders}\ninterval: 5s\ntimeout: 3s")
	whole := newCheck(t, "grpc: {address: '"+g.addr+"'}\ninterval: 5s\ntimeout: 3s")
	unknown := newCheck(t, "grpc: {address: '"+g.addr+"', service: billing}\ninterval: 5s\ntimeout: 3s")

	t.Run("serving", func(t *testing.T) {
		expect(t, c, true, `service "orders" SERVING`)
		expect(t, whole, true, "server SERVING")
		expect(t, unknown, false, "NotFound")
	})

	t.Run("not serving", func(t *testing.T) {
		g.health.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
		expect(t, c, false, `grpc `+g.addr+`: service "orders" is NOT_SERVING`)
		g.health.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
		expect(t, c, true, `service "orders" SERVING`)
	})

	t.Run("stopped", func(t *testing.T) {
		g.stop()
		start := time.Now()
		expect(t, c, false, "grpc "+g.addr+": health check of service \"orders\": rpc error: code = Unavailable")
		if took := time.Since(start); took > time.Second {
			t.Errorf("a stopped server took %s to fail the check", took)
		}
	})

	t.Run("back", func(t *testing.T) {
		g.start(t, true)
		testutil.WaitFor(t, 5*time.Second, "the check up again", func() bool { return c.Run(context.Background()).Healthy })
	})
}

func TestWatchGRPC(t *testing.T) {
	g := startGRPC(t, true)
	c := newCheck(t, "grpc: {address: '"+g.addr+"', service: orders}\ninterval: 5s\ntimeout: 3s")
	w := startWatch(t, watchGRPC, c)
	// The first status comes at once and wakes nothing; wait until the
	// stream is open by flipping the status until a wake arrives.
	testutil.WaitFor(t, 5*time.Second, "the stream open", func() bool {
		g.health.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
		g.health.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
		return w.wakes.Load() > 0
	})
	expect(t, c, false, "is NOT_SERVING")
	w.faultToWake(t, func() { g.health.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING) }, time.Second)
	expect(t, c, true, "SERVING")

	w.faultToWake(t, g.stop, time.Second)
	expect(t, c, false, "Unavailable")
	w.backToWake(t, func() { g.start(t, true) })
	testutil.WaitFor(t, 5*time.Second, "the check up again", func() bool { return c.Run(context.Background()).Healthy })
	w.stop(t)
}

// A server whose health service has no Watch gives no event source: the
// watch returns at once with an error, and the check is polled.
func TestWatchGRPCUnimplemented(t *testing.T) {
	g := startGRPC(t, false)
	c := newCheck(t, "grpc: {address: '"+g.addr+"', service: orders}\ninterval: 5s\ntimeout: 3s")
	expect(t, c, true, "SERVING")
	w := startWatch(t, watchGRPC, c)
	select {
	case err := <-w.done:
		if want := "no event source: grpc " + g.addr + ": Health/Watch: rpc error: code = Unimplemented"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("watch returned %v; want %q...", err, want)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("watch still running 3s against a server without Watch")
	}
}

func TestGRPCCheckTLS(t *testing.T) {
	cert, caFile, _, _ := testutil.SelfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	addr := ln.Addr().String()

	expect(t, newCheck(t, "grpc: {address: '"+addr+"', ca_file: '"+caFile+"'}\ninterval: 5s\ntimeout: 3s"), true, "server SERVING")
	expect(t, newCheck(t, "grpc: {address: '"+addr+"', tls: true}\ninterval: 5s\ntimeout: 3s"), false, "certificate signed by unknown authority")
	expect(t, newCheck(t, "grpc: {address: '"+addr+"'}\ninterval: 5s\ntimeout: 3s"), false, "Unavailable")
}
