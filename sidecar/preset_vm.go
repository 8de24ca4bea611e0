package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
)

// DefaultLibvirtURI is the hypervisor connection of the vm preset.
const DefaultLibvirtURI = "qemu:///system"

// VMSpec: the node VMs running under libvirt. Read natively over the
// daemon's unix socket (go-libvirt) when the URI has one; otherwise, or
// when command is set, from `virsh -c URI list --all` (forks virsh).
type VMSpec struct {
	URI     string   `yaml:"uri"`     // default qemu:///system
	Domains []string `yaml:"domains"` // domains that must be running; empty: every listed domain
	Command []string `yaml:"command"` // fork this instead; default without a daemon socket [virsh, -c, <uri>, list, --all]

	native     bool   // read over the daemon socket
	sock, open string // the socket and the URI opened through it (libvirtTarget)
	mu         sync.Mutex
	conn       *libvirt.Libvirt // kept between runs; dropped on any error
}

func (s *VMSpec) compile(*Check) error {
	if s.URI == "" {
		s.URI = DefaultLibvirtURI
	}
	if len(s.Command) == 0 {
		if sock, open, err := libvirtTarget(s.URI); err == nil {
			s.native, s.sock, s.open = true, sock, open
		}
		s.Command = []string{"virsh", "-c", s.URI, "list", "--all"}
	}
	return nil
}

func probeVM(ctx context.Context, c *Check) Result {
	s := c.VM
	var states map[string]string
	var out []byte
	if s.native {
		var err error
		if states, err = s.list(ctx); err != nil {
			return fail(err)
		}
	} else {
		var err error
		if out, err = presetCommand(ctx, s.Command); err != nil {
			return Result{Err: err, Output: string(out)}
		}
		states = parseVirshList(out)
	}
	want := s.Domains
	if len(want) == 0 {
		if len(states) == 0 {
			return Result{Err: fmt.Errorf("no domains listed"), Output: string(out)}
		}
		for name := range states {
			want = append(want, name)
		}
	}
	for _, name := range want {
		state, ok := states[name]
		switch {
		case !ok:
			return Result{Err: fmt.Errorf("domain %s not found", name), Output: string(out)}
		case state != "running":
			return Result{Err: fmt.Errorf("domain %s is %s", name, state), Output: string(out)}
		}
	}
	return pass("%d domains running", len(want))
}

// list maps every domain's name to its state, named as virsh names them,
// over the kept connection to the daemon: two calls (all domains, running
// domains) and one more per domain that is not running, to name its state.
// go-libvirt's calls take no context: when ctx ends first the connection is
// dropped, which ends the call.
func (s *VMSpec) list(ctx context.Context) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return onKept(ctx, s.conn != nil, func() (map[string]string, error) { return s.listOnce(ctx) }, nil)
}

func (s *VMSpec) listOnce(ctx context.Context) (map[string]string, error) {
	if s.conn == nil {
		timeout := time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		conn, err := libvirtConnect(s.sock, s.open, timeout)
		if err != nil {
			return nil, err
		}
		s.conn = conn
	}
	conn := s.conn
	// Closing the connection (dropLocked) ends a call that ctx left behind.
	states, err := within(ctx, func() (map[string]string, error) { return libvirtStates(conn) }, nil)
	if err != nil {
		s.dropLocked()
		return nil, fmt.Errorf("libvirt %s: %w", s.open, err)
	}
	return states, nil
}

func libvirtStates(conn *libvirt.Libvirt) (map[string]string, error) {
	all, _, err := conn.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, err
	}
	running, _, err := conn.ConnectListAllDomains(1, libvirt.ConnectListDomainsRunning)
	if err != nil {
		return nil, err
	}
	states := make(map[string]string, len(all))
	for _, d := range running {
		states[d.Name] = "running"
	}
	for _, d := range all {
		if _, ok := states[d.Name]; ok {
			continue
		}
		st, _, err := conn.DomainGetState(d, 0)
		if err != nil {
			var lerr libvirt.Error
			if errors.As(err, &lerr) && lerr.Code == uint32(libvirt.ErrNoDomain) {
				continue // undefined between the two calls
			}
			return nil, fmt.Errorf("state of domain %s: %w", d.Name, err)
		}
		states[d.Name] = domainStateName(libvirt.DomainState(st))
	}
	return states, nil
}

// domainStateName names a domain state as virsh list does.
func domainStateName(st libvirt.DomainState) string {
	switch st {
	case libvirt.DomainRunning:
		return "running"
	case libvirt.DomainBlocked:
		return "idle"
	case libvirt.DomainPaused:
		return "paused"
	case libvirt.DomainShutdown:
		return "in shutdown"
	case libvirt.DomainShutoff:
		return "shut off"
	case libvirt.DomainCrashed:
		return "crashed"
	case libvirt.DomainPmsuspended:
		return "pmsuspended"
	}
	return "no state"
}

func (s *VMSpec) dropLocked() {
	if s.conn != nil {
		_ = s.conn.Disconnect()
		s.conn = nil
	}
}

func (s *VMSpec) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked()
}

// parseVirshList maps domain name to state from virsh's table:
//
//	 Id   Name     State
//	-------------------------
//	 1    worker   running
//	 -    spare    shut off
func parseVirshList(out []byte) map[string]string {
	states := map[string]string{}
	body := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "---") {
			body = true
			continue
		}
		f := strings.Fields(line)
		if !body || len(f) < 3 {
			continue
		}
		states[f[1]] = strings.Join(f[2:], " ")
	}
	return states
}
