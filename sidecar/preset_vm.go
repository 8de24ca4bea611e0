package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
)

// DefaultLibvirtURI is the hypervisor connection of the vm preset.
const DefaultLibvirtURI = "qemu:///system"

// VMSpec: the node VMs running under libvirt, from `virsh -c URI list --all`
// (forks virsh).
type VMSpec struct {
	URI     string   `yaml:"uri"`     // default qemu:///system
	Domains []string `yaml:"domains"` // domains that must be running; empty: every listed domain
	Command []string `yaml:"command"` // default [virsh, -c, <uri>, list, --all]
}

func (s *VMSpec) compile(*Check) error {
	if s.URI == "" {
		s.URI = DefaultLibvirtURI
	}
	if len(s.Command) == 0 {
		s.Command = []string{"virsh", "-c", s.URI, "list", "--all"}
	}
	return nil
}

func probeVM(ctx context.Context, c *Check) Result {
	s := c.VM
	out, err := presetCommand(ctx, s.Command)
	if err != nil {
		return Result{Err: err, Output: string(out)}
	}
	states := parseVirshList(out)
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
