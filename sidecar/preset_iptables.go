package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
)

// IPTablesSpec: packet filtering rules present, counted from `iptables -S`
// (forks iptables). A table with only its default policies has been flushed.
type IPTablesSpec struct {
	Command  []string `yaml:"command"`   // default [iptables, -S]
	MinRules int      `yaml:"min_rules"` // rules (-A lines) needed, default 1
}

func (s *IPTablesSpec) compile(*Check) error {
	if len(s.Command) == 0 {
		s.Command = []string{"iptables", "-S"}
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
