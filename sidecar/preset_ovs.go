package sidecar

import (
	"context"
	"fmt"
	"net"
)

// OVSSpec: the Open vSwitch daemon running with its database socket, found by
// reading /proc/*/cmdline directly (no fork of ps | grep), or by its pidfile.
// Its event source is a pidfd of the daemon, plus a held connection to the
// database socket when one is named.
type OVSSpec struct {
	Process string `yaml:"process"` // program name (argv[0] base name), default ovs-vswitchd
	Match   string `yaml:"match"`   // an argument must contain this, default db.sock
	Pidfile string `yaml:"pidfile"` // e.g. /var/run/openvswitch/ovs-vswitchd.pid; the process must still match
	Socket  string `yaml:"socket"`  // e.g. /var/run/openvswitch/db.sock: must accept a connection; default not checked
	Proc    string `yaml:"proc"`    // where procfs is mounted, default /proc

	target procTarget
}

func (s *OVSSpec) compile(*Check) error {
	if s.Process == "" {
		s.Process = "ovs-vswitchd"
	}
	if s.Match == "" {
		s.Match = "db.sock"
	}
	s.target = procTarget{Pidfile: s.Pidfile, Name: s.Process, Match: s.Match, Proc: s.Proc}
	s.target.defaults()
	s.Proc = s.target.Proc
	return nil
}

func probeOVS(ctx context.Context, c *Check) Result {
	s := c.OVS
	pid, err := s.target.find(ctx)
	if err != nil {
		return fail(err)
	}
	if err := dialSocket(ctx, s.Socket); err != nil {
		return fail(err)
	}
	return pass("%s running as pid %d", s.Process, pid)
}

func watchOVS(ctx context.Context, c *Check, wake func()) error {
	return watchDaemon(ctx, c, &c.OVS.target, c.OVS.Socket, wake)
}

// dialSocket opens and closes a connection to a unix socket; "" is not
// checked.
func dialSocket(ctx context.Context, path string) error {
	if path == "" {
		return nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	return conn.Close()
}
