package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/nftables"
)

// IPTablesSpec: packet filtering rules present in the filter table. When
// iptables uses its nf_tables backend (`iptables -V` says so; asked once)
// and no command is set, the rules are read over netlink, as the nftables
// preset reads them; otherwise they are counted from `iptables -S` (forks
// iptables). A table with only its default policies has been flushed.
type IPTablesSpec struct {
	Netns    string   `yaml:"netns"`     // network namespace: a name from `ip netns` or a path; default the sidecar's
	Command  []string `yaml:"command"`   // fork this instead; default with the legacy backend [iptables, -S] (under nsenter when netns is set)
	MinRules int      `yaml:"min_rules"` // rules (-A lines) needed, default 1

	native  bool // no command set: read natively when the backend is nf_tables
	mu      sync.Mutex
	backend string // iptables -V, once it answered
	reader  *nftReader
}

func (s *IPTablesSpec) compile(*Check) error {
	s.reader = newNFTReader(s.Netns)
	if len(s.Command) == 0 {
		s.native = true
		s.Command = []string{"iptables", "-S"}
		if s.Netns != "" {
			s.Command = append([]string{"nsenter", "--net=" + netnsPath(s.Netns)}, s.Command...)
		}
	}
	if s.MinRules < 0 {
		return fmt.Errorf("min_rules %d: must not be negative", s.MinRules)
	}
	if s.MinRules == 0 {
		s.MinRules = 1
	}
	return nil
}

func probeIPTables(ctx context.Context, c *Check) Result {
	s := c.IPTables
	if s.native {
		if backend, err := s.version(ctx); err == nil && isNFTBackend(backend) {
			_, n, err := s.reader.count(isIPTablesFilter)
			if err != nil {
				return fail(err)
			}
			return judgeIPTables(n, s.MinRules, nil)
		}
	}
	out, err := presetCommand(ctx, s.Command)
	if err != nil {
		return Result{Err: err, Output: string(out)}
	}
	return judgeIPTables(countPrefixed(out, "-A "), s.MinRules, out)
}

func judgeIPTables(n, min int, out []byte) Result {
	if n < min {
		return Result{Err: fmt.Errorf("%d iptables rules, want at least %d", n, min), Output: string(out)}
	}
	return pass("%d rules", n)
}

// isIPTablesFilter: the table `iptables -S` lists, as iptables' nf_tables
// backend stores it.
func isIPTablesFilter(t *nftables.Table) bool {
	return t.Family == nftables.TableFamilyIPv4 && t.Name == "filter"
}

func isNFTBackend(version string) bool { return strings.Contains(version, "nf_tables") }

// version is what `iptables -V` says (for the command's iptables binary),
// asked once: the backend does not change while the sidecar runs.
func (s *IPTablesSpec) version(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.backend != "" {
		return s.backend, nil
	}
	out, err := combinedOutput(exec.CommandContext(ctx, iptablesProgram(s.Command), "-V"))
	if err != nil {
		return "", fmt.Errorf("%s -V: %w", iptablesProgram(s.Command), err)
	}
	s.backend = strings.TrimSpace(string(out))
	return s.backend, nil
}

func countPrefixed(out []byte, prefix string) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), prefix) {
			n++
		}
	}
	return n
}

// watchIPTables: rules changed through iptables' nf_tables backend (Debian's
// default since 10, RHEL's since 8) are nftables commits, so the nftables
// monitor is the event source. The legacy backend has no events: the check
// then polls.
func watchIPTables(ctx context.Context, c *Check, wake func()) error {
	backend, err := c.IPTables.version(ctx)
	switch {
	case err != nil:
		return err
	case !isNFTBackend(backend):
		return fmt.Errorf("%w: iptables is %s (the legacy backend has no events)", errCannotWatch, backend)
	}
	return watchNFT(ctx, c, c.IPTables.reader, wake)
}

// iptablesProgram is the iptables binary the check's command runs (for
// `iptables-legacy -S` that is iptables-legacy), or plain iptables.
func iptablesProgram(argv []string) string {
	for _, a := range argv {
		if b := filepath.Base(a); strings.HasPrefix(b, "iptables") && !strings.Contains(b, "-save") {
			return a
		}
	}
	return "iptables"
}

func (s *IPTablesSpec) close() { s.reader.close() }
