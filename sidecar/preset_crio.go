package sidecar

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
)

// CRIOSpec: the container runtime's unit active (running), and its socket
// accepting connections when one is named. The unit's state is read from
// systemd over its private D-Bus socket (no fork) when that socket is
// there; otherwise, or when command is set, from the Active: line of
// `systemctl status` (forks systemctl). Its event source is a pidfd of the
// crio process, plus a held connection to the socket.
type CRIOSpec struct {
	Unit          string   `yaml:"unit"`           // default crio
	SystemdSocket string   `yaml:"systemd_socket"` // the manager's private socket; default /run/systemd/private
	Command       []string `yaml:"command"`        // fork this instead; default without the socket [systemctl, status, --no-pager, --lines=0, <unit>]
	Socket        string   `yaml:"socket"`         // e.g. /var/run/crio/crio.sock; default not checked
	Process       string   `yaml:"process"`        // program name the event source watches, default crio
	Pidfile       string   `yaml:"pidfile"`        // or its pidfile
	Proc          string   `yaml:"proc"`           // where procfs is mounted, default /proc

	target   procTarget
	native   bool // no command set: ask systemd itself
	fallback bool // the default socket is not there: fork systemctl
	systemd  systemdUnits
}

func (s *CRIOSpec) compile(*Check) error {
	if s.Unit == "" {
		s.Unit = "crio"
	}
	if len(s.Command) > 0 && s.SystemdSocket != "" {
		return errors.New("command and systemd_socket: set one (systemd_socket reads the unit's state without forking)")
	}
	if len(s.Command) == 0 {
		s.native = true
		s.fallback = s.SystemdSocket == ""
		s.systemd.socket = cmp.Or(s.SystemdSocket, DefaultSystemdSocket)
		s.Command = []string{"systemctl", "status", "--no-pager", "--lines=0", s.Unit}
	}
	if s.Process == "" {
		s.Process = "crio"
	}
	s.target = procTarget{Pidfile: s.Pidfile, Name: s.Process, Proc: s.Proc}
	s.target.defaults()
	return nil
}

func watchCRIO(ctx context.Context, c *Check, wake func()) error {
	return watchDaemon(ctx, c, &c.CRIO.target, c.CRIO.Socket, wake)
}

func probeCRIO(ctx context.Context, c *Check) Result {
	s := c.CRIO
	if s.native {
		u, err := s.systemd.state(ctx, unitName(s.Unit))
		switch {
		case errors.Is(err, errNoSystemdSocket) && s.fallback:
			// No systemd socket mounted: systemctl may still reach it.
		case err != nil:
			return fail(fmt.Errorf("%s: %w", s.Unit, err))
		case u.Load == "not-found":
			return fail(fmt.Errorf("%s: unit %s not found", s.Unit, unitName(s.Unit)))
		case u.Active != "active" || u.Sub != "running":
			return fail(fmt.Errorf("%s is %s", s.Unit, u))
		default:
			if err := dialSocket(ctx, s.Socket); err != nil {
				return fail(fmt.Errorf("%s %w", s.Unit, err))
			}
			return pass("%s %s", s.Unit, u)
		}
	}
	// systemctl status exits 3 for an inactive unit; the Active: line says
	// more than the exit code, so it is judged instead.
	r, err := runCommand(ctx, s.Command, 64<<10)
	if err != nil {
		return Result{Err: err, Output: string(r.out)}
	}
	active, err := unitActive(r.out)
	if err != nil {
		return Result{Err: fmt.Errorf("%s: %w", s.Unit, err), Output: string(r.out)}
	}
	if !strings.HasPrefix(active, "active (running)") && active != "active" {
		return Result{Err: fmt.Errorf("%s is %s", s.Unit, active), Output: string(r.out)}
	}
	if err := dialSocket(ctx, s.Socket); err != nil {
		return fail(fmt.Errorf("%s %w", s.Unit, err))
	}
	return pass("%s %s", s.Unit, active)
}

// unitActive returns the state from systemctl status's "Active:" line
// ("active (running) since …") or the single word of systemctl is-active.
func unitActive(out []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "Active:"); ok {
			state, _, _ := strings.Cut(strings.TrimSpace(rest), " since ")
			return state, nil
		}
	}
	if word := strings.TrimSpace(string(out)); word != "" && !strings.ContainsAny(word, " \n") {
		return word, nil
	}
	if len(out) == 0 {
		return "", errors.New("no output")
	}
	return "", fmt.Errorf("no Active: line in %q", firstLine(out))
}

func (s *CRIOSpec) close() { s.systemd.close() }
