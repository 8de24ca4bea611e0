package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.TCP.Address)
	if err != nil {
		return fail(fmt.Errorf("tcp dial %s: %w", c.TCP.Address, err))
	}
	conn.Close()
	return pass("connected")
}
