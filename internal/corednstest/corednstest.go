// Package corednstest starts an in-process CoreDNS from a Corefile string,
// without importing every plugin as CoreDNS's own test package does.
package corednstest

import (
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"

	"github.com/healthswitch/healthswitch/internal/directives"
)

type input struct{ body string }

func (i input) Body() []byte       { return []byte(i.body) }
func (i input) Path() string       { return "Corefile" }
func (i input) ServerType() string { return "dns" }

// Server is a running CoreDNS instance. Caddy instances are process-wide:
// tests that use one must not run in parallel.
type Server struct {
	t    testing.TB
	inst *caddy.Instance
}

// Start starts corefile (use port 0 in its server addresses) and stops it
// when the test ends.
func Start(t testing.TB, corefile string) *Server {
	t.Helper()
	s, err := TryStart(t, corefile)
	if err != nil {
		t.Fatalf("starting CoreDNS: %v", err)
	}
	return s
}

// TryStart is Start for tests that expect a Corefile to fail: it returns
// the error instead of failing the test.
func TryStart(t testing.TB, corefile string) (*Server, error) {
	t.Helper()
	if err := dnsserver.SetDirectives(directives.List); err != nil {
		t.Fatal(err)
	}
	inst, err := caddy.Start(input{corefile})
	if err != nil {
		return nil, err
	}
	s := &Server{t: t, inst: inst}
	t.Cleanup(s.Stop)
	return s, nil
}

// UDP is the UDP address of the first server block.
func (s *Server) UDP() string { return s.inst.Servers()[0].LocalAddr().String() }

// TCP is the TCP address of the first server block; with port 0 it differs
// from the UDP one.
func (s *Server) TCP() string { return s.inst.Servers()[0].Addr().String() }

// Reload replaces the Corefile, as the reload plugin or SIGUSR1 would. On
// error the old instance keeps serving.
func (s *Server) Reload(corefile string) error {
	inst, err := s.inst.Restart(input{corefile})
	if err != nil {
		return err
	}
	s.inst = inst
	return nil
}

// Stop stops the newest instance and runs its shutdown hooks; idempotent.
func (s *Server) Stop() {
	if s.inst == nil {
		return
	}
	s.inst.Stop()
	s.inst.ShutdownCallbacks()
	s.inst = nil
}
