package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// IPTablesSpec: packet filtering rules present, counted from `iptables -S`
// (forks iptables). A table with only its default policies has been flushed.
type IPTablesSpec struct {
	Netns    string   `yaml:"netns"`     // network namespace: a name from `ip netns` or a path; default the sidecar's
	Command  []string `yaml:"command"`   // default [iptables, -S] (under nsenter when netns is set)
	MinRules int      `yaml:"min_rules"` // rules (-A lines) needed, default 1
}

func (s *IPTablesSpec) compile(*Check) error {
	if len(s.Command) == 0 {
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
	out, err := presetCommand(ctx, s.Command)
	if err != nil {
		return Result{Err: err, Output: string(out)}
	}
	n := countPrefixed(out, "-A ")
	if n < s.MinRules {
		return Result{Err: fmt.Errorf("%d iptables rules, want at least %d", n, s.MinRules), Output: string(out)}
	}
	return pass("%d rules", n)
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
	out, err := exec.CommandContext(ctx, iptablesProgram(c.IPTables.Command), "-V").CombinedOutput()
	switch {
	case err != nil:
		return fmt.Errorf("iptables -V: %w", err)
	case !strings.Contains(string(out), "nf_tables"):
		return fmt.Errorf("%w: iptables is %s (the legacy backend has no events)", errCannotWatch, strings.TrimSpace(string(out)))
	}
	return watchNFT(ctx, c, c.IPTables.Netns, wake)
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
