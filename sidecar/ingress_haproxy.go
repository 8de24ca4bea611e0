package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// HAProxyIngress drains (stop) and readies (resume) every server of the
// listed backends through HAProxy's runtime API on its stats socket.
type HAProxyIngress struct {
	Socket   string   `yaml:"socket"`   // `stats socket ... level admin`: a unix socket path, or host:port
	Backends []string `yaml:"backends"` // backends whose servers are drained

	network string // unix or tcp
}

// Bits of srv_admin_state in `show servers state` (HAProxy's SRV_ADMF_*).
const (
	haFMaint = 0x01 // forced maintenance (an operator's `state maint`)
	haIMaint = 0x02 // inherited from a tracked server
	haCMaint = 0x04 // `disabled` in the configuration
	haFDrain = 0x08 // forced drain: what stop sets
	haIDrain = 0x10 // inherited drain
	haRMaint = 0x20 // DNS resolution failed
	haHMaint = 0x40 // health check failed with on-marked-down
	haMaint  = haFMaint | haIMaint | haCMaint | haRMaint | haHMaint
)

// haMaxResponse bounds what is read from the socket for one command.
const haMaxResponse = 1 << 20

func (h *HAProxyIngress) compile(a *IngressAction) error {
	if h.Socket == "" {
		return errors.New("socket: required (the path of HAProxy's `stats socket ... level admin`)")
	}
	h.network = "unix"
	if !strings.HasPrefix(h.Socket, "/") {
		if _, _, err := net.SplitHostPort(h.Socket); err != nil {
			return fmt.Errorf("socket %q: neither an absolute path nor host:port", h.Socket)
		}
		h.network = "tcp"
	}
	if len(h.Backends) == 0 {
		return errors.New("backends: at least one backend is required")
	}
	for i, b := range h.Backends {
		if b == "" || strings.ContainsAny(b, " \t;/\\\n") {
			return fmt.Errorf("backends[%d] %q: not a backend name", i, b)
		}
	}
	a.target, a.do = h.Socket+" "+strings.Join(h.Backends, ","), h.apply
	return nil
}

// haServer is one server as `show servers state` lists it.
type haServer struct {
	backend, name string
	admin         int
}

func (s haServer) maint() bool   { return s.admin&haMaint != 0 }
func (s haServer) drained() bool { return s.admin&(haFDrain|haIDrain) != 0 }

// apply reads the servers, changes only those not yet in the wanted state
// (so applying twice changes nothing the second time), and reads them back.
// Stop drains every server not in maintenance; resume readies the servers
// that are drained, and leaves an operator's maintenance alone.
func (h *HAProxyIngress) apply(ctx context.Context, n applyRequest) (string, error) {
	var cmds []string
	for _, b := range h.Backends {
		servers, err := h.servers(ctx, b)
		if err != nil {
			return "", err
		}
		for _, s := range servers {
			switch {
			case n.action == actionStop && !s.maint() && !s.drained():
				cmds = append(cmds, "set server "+s.backend+"/"+s.name+" state drain")
			case n.action == actionResume && s.admin&haFDrain != 0 && s.admin&haFMaint == 0:
				cmds = append(cmds, "set server "+s.backend+"/"+s.name+" state ready")
			}
		}
	}
	if len(cmds) > 0 {
		out, err := h.command(ctx, strings.Join(cmds, "; "))
		if err != nil {
			return "", err
		}
		if msg := strings.TrimSpace(out); msg != "" {
			return "", fmt.Errorf("haproxy %s: %s", h.Socket, msg)
		}
	}
	total := 0
	for _, b := range h.Backends {
		servers, err := h.servers(ctx, b)
		if err != nil {
			return "", fmt.Errorf("reading back: %w", err)
		}
		for _, s := range servers {
			if n.action == actionStop && !s.maint() && !s.drained() {
				return "", fmt.Errorf("haproxy %s: %s/%s is not draining after the change", h.Socket, s.backend, s.name)
			}
			if n.action == actionResume && s.admin&haFDrain != 0 && s.admin&haFMaint == 0 {
				return "", fmt.Errorf("haproxy %s: %s/%s is still draining after the change", h.Socket, s.backend, s.name)
			}
		}
		total += len(servers)
	}
	return fmt.Sprintf("%d of %d servers changed", len(cmds), total), nil
}

// servers lists a backend's servers with `show servers state <backend>`.
func (h *HAProxyIngress) servers(ctx context.Context, backend string) ([]haServer, error) {
	out, err := h.command(ctx, "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	return parseServersState(backend, out)
}

// parseServersState reads the output of `show servers state`: a version
// line ("1"), a "# " header naming the columns, then one line per server.
func parseServersState(backend, out string) ([]haServer, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != "1" || !strings.HasPrefix(lines[1], "# ") {
		return nil, fmt.Errorf("backend %s: haproxy says %q", backend, firstLine([]byte(strings.TrimSpace(out))))
	}
	cols := strings.Fields(strings.TrimPrefix(lines[1], "# "))
	nameCol, adminCol, beCol := -1, -1, -1
	for i, c := range cols {
		switch c {
		case "srv_name":
			nameCol = i
		case "srv_admin_state":
			adminCol = i
		case "be_name":
			beCol = i
		}
	}
	if nameCol < 0 || adminCol < 0 || beCol < 0 {
		return nil, fmt.Errorf("backend %s: `show servers state` lacks be_name, srv_name or srv_admin_state", backend)
	}
	var servers []haServer
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) <= max(nameCol, adminCol, beCol) {
			return nil, fmt.Errorf("backend %s: short line %q", backend, l)
		}
		admin, err := strconv.Atoi(f[adminCol])
		if err != nil {
			return nil, fmt.Errorf("backend %s: srv_admin_state %q is not a number", backend, f[adminCol])
		}
		servers = append(servers, haServer{backend: f[beCol], name: f[nameCol], admin: admin})
	}
	return servers, nil
}

// command sends one line to the runtime API and returns the whole answer.
// Without the `prompt` command the socket is non-interactive: HAProxy
// answers the line and closes the connection, so EOF ends the answer.
func (h *HAProxyIngress) command(ctx context.Context, line string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, h.network, h.Socket)
	if err != nil {
		return "", fmt.Errorf("haproxy: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(DefaultIngressTimeout))
	}
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", fmt.Errorf("haproxy %s: %w", h.Socket, err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(conn, haMaxResponse)); err != nil {
		return "", fmt.Errorf("haproxy %s: reading the answer to %q: %w", h.Socket, clip(line), err)
	}
	return buf.String(), nil
}
