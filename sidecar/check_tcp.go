package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"

	hsprobe "github.com/healthswitch/healthswitch/internal/prober"
)

// TCPSpec checks that a TCP connection to address can be opened.
type TCPSpec struct {
	Address string `yaml:"address"` // host:port
}

func (s *TCPSpec) compile(*Check) error {
	if s.Address == "" {
		return errors.New("address: required (host:port)")
	}
	if _, _, err := net.SplitHostPort(s.Address); err != nil {
		return fmt.Errorf("address %q: %w", s.Address, err)
	}
	return nil
}

func probeTCP(ctx context.Context, c *Check) Result {
	if err := hsprobe.TCP(ctx, c.TCP.Address); err != nil {
		return fail(err)
	}
	return pass("connected")
}
