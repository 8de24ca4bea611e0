package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"
)

// DefaultSystemdSocket is systemd's private D-Bus socket: the manager
// answers on it directly, without a bus daemon (root only).
const DefaultSystemdSocket = "/run/systemd/private"

// systemdUnits reads units' states from a systemd manager over its private
// socket, on one connection kept between runs and dropped on any error.
type systemdUnits struct {
	socket string
	mu     sync.Mutex
	conn   *dbus.Conn
}

// unitState is what `systemctl status` shows on its Active: line.
type unitState struct {
	Load, Active, Sub, Result string
}

// String names the state as systemctl's Active: line does.
func (u unitState) String() string {
	if u.Active == "failed" && u.Result != "" {
		return fmt.Sprintf("failed (Result: %s)", u.Result)
	}
	return fmt.Sprintf("%s (%s)", u.Active, u.Sub)
}

// errNoSystemdSocket: the socket is not there (no systemd, or not mounted).
var errNoSystemdSocket = errors.New("no systemd socket")

// state reads the unit's load, active and sub state (and, for a failed
// service, its result).
func (s *systemdUnits) state(ctx context.Context, unit string) (unitState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return onKept(ctx, s.conn != nil, func() (unitState, error) { return s.stateOnce(ctx, unit) }, nil)
}

func (s *systemdUnits) stateOnce(ctx context.Context, unit string) (unitState, error) {
	if s.conn == nil {
		conn, err := s.dial(ctx)
		if err != nil {
			return unitState{}, err
		}
		s.conn = conn
	}
	obj := s.conn.Object("org.freedesktop.systemd1", unitPath(unit))
	get := func(iface, prop string) (string, error) {
		var v dbus.Variant
		if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, iface, prop).Store(&v); err != nil {
			return "", fmt.Errorf("systemd %s %s.%s: %w", unit, iface, prop, err)
		}
		str, ok := v.Value().(string)
		if !ok {
			return "", fmt.Errorf("systemd %s %s: a %s, not a string", unit, prop, v.Signature())
		}
		return str, nil
	}
	var u unitState
	var err error
	for _, p := range []struct {
		into *string
		name string
	}{{&u.Load, "LoadState"}, {&u.Active, "ActiveState"}, {&u.Sub, "SubState"}} {
		if *p.into, err = get("org.freedesktop.systemd1.Unit", p.name); err != nil {
			s.closeLocked()
			return unitState{}, err
		}
	}
	if u.Active == "failed" && strings.HasSuffix(unit, ".service") {
		u.Result, _ = get("org.freedesktop.systemd1.Service", "Result") // only to name the failure
	}
	return u, nil
}

// dial connects and authenticates (EXTERNAL: the socket's peer
// credentials), within ctx: a manager too busy to answer must not hold the
// run past its timeout.
func (s *systemdUnits) dial(ctx context.Context) (*dbus.Conn, error) {
	conn, err := within(ctx, func() (*dbus.Conn, error) {
		conn, err := dbus.Dial("unix:path=" + s.socket)
		if err == nil {
			if err = conn.Auth(nil); err != nil {
				conn.Close()
				return nil, fmt.Errorf("auth: %w", err)
			}
		}
		return conn, err
	}, func(late *dbus.Conn) { late.Close() })
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s", errNoSystemdSocket, s.socket)
	case err != nil:
		return nil, fmt.Errorf("systemd %s: %w", s.socket, err)
	}
	return conn, nil
}

func (s *systemdUnits) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

func (s *systemdUnits) closeLocked() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// unitName adds .service to a name without a unit type, as systemctl does.
func unitName(name string) string {
	for _, suffix := range []string{".service", ".socket", ".target", ".mount", ".timer", ".scope", ".slice", ".path", ".swap", ".device", ".automount"} {
		if strings.HasSuffix(name, suffix) {
			return name
		}
	}
	return name + ".service"
}

// unitPath is the D-Bus object path of a unit: its name with every byte
// but ASCII letters and digits written as _XX (lower-case hex), as systemd
// escapes it (crio.service → /org/freedesktop/systemd1/unit/crio_2eservice).
func unitPath(unit string) dbus.ObjectPath {
	var b strings.Builder
	b.WriteString("/org/freedesktop/systemd1/unit/")
	if unit == "" {
		b.WriteByte('_')
	}
	for i := 0; i < len(unit); i++ {
		c := unit[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return dbus.ObjectPath(b.String())
}
