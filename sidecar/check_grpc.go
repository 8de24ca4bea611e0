package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// GRPCSpec checks a server with the standard health service
// (grpc.health.v1.Health/Check): the service must be SERVING.
type GRPCSpec struct {
	Address string `yaml:"address"` // host:port
	Service string `yaml:"service"` // "" asks about the whole server
	TLS     bool   `yaml:"tls"`     // TLS; plaintext otherwise
	CAFile  string `yaml:"ca_file"` // PEM roots to verify the server with (implies tls); the system's otherwise

	roots  *x509.CertPool
	once   sync.Once
	conn   *grpc.ClientConn // kept between runs; it reconnects by itself
	dialEr error
}

func (s *GRPCSpec) compile(*Check) (err error) {
	if err := validAddress(s.Address); err != nil {
		return err
	}
	if s.CAFile == "" {
		return nil
	}
	s.TLS = true
	s.roots, err = loadRoots(s.CAFile)
	return err
}

// client opens a connection that retries quickly: gRPC's default backoff
// grows to two minutes, far too slow to see a server come back.
func (s *GRPCSpec) client(timeout time.Duration) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if s.TLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.roots})
	}
	return grpc.NewClient("passthrough:///"+s.Address,
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("healthswitch-sidecar/"+Version),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: holdBackoffMin, Multiplier: 2, Jitter: 0.2, MaxDelay: holdBackoffMax},
			MinConnectTimeout: timeout,
		}))
}

func probeGRPC(ctx context.Context, c *Check) Result {
	s := c.GRPC
	s.once.Do(func() { s.conn, s.dialEr = s.client(c.timeout) })
	if s.dialEr != nil {
		return fail(fmt.Errorf("grpc %s: %w", s.Address, s.dialEr))
	}
	resp, err := healthpb.NewHealthClient(s.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: s.Service})
	if err != nil {
		return fail(fmt.Errorf("grpc %s: health check of %s: %w", s.Address, s.what(), err))
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fail(fmt.Errorf("grpc %s: %s is %s", s.Address, s.what(), st))
	}
	return pass("%s SERVING", s.what())
}

func (s *GRPCSpec) what() string {
	if s.Service == "" {
		return "server"
	}
	return fmt.Sprintf("service %q", s.Service)
}

func (s *GRPCSpec) close() {
	s.once.Do(func() {}) // waits for an open in flight; none can start after
	if s.conn != nil {
		s.conn.Close()
	}
}

// watchGRPC holds a Health/Watch stream: the server sends the status at once
// and on every change, and a server that dies breaks the stream. Either
// wakes the check. A server without Watch (Unimplemented) has no source.
func watchGRPC(ctx context.Context, c *Check, wake func()) error {
	s := c.GRPC
	conn, err := s.client(c.timeout)
	if err != nil {
		return errNoSource{err}
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	return holdLoop(ctx, wake, func(ctx context.Context, ready func()) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: s.Service})
		if err != nil {
			return err
		}
		if _, err := stream.Recv(); err != nil {
			if status.Code(err) == codes.Unimplemented {
				return errNoSource{fmt.Errorf("grpc %s: Health/Watch: %w", s.Address, err)}
			}
			return err
		}
		ready()
		for {
			if _, err := stream.Recv(); err != nil {
				return err
			}
			wake()
		}
	})
}
