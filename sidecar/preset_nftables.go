package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
)

// NFTablesSpec: an nftables ruleset present, from `nft list ruleset` (forks
// nft). An empty ruleset is the fault.
type NFTablesSpec struct {
	Command  []string `yaml:"command"`   // default [nft, list, ruleset]
	MinRules int      `yaml:"min_rules"` // rules needed inside chains; default 0: any table will do
}

func (s *NFTablesSpec) compile(*Check) error {
	if len(s.Command) == 0 {
		s.Command = []string{"nft", "list", "ruleset"}
	}
	if s.MinRules < 0 {
		return fmt.Errorf("min_rules %d: must not be negative", s.MinRules)
	}
	return nil
}

func probeNFTables(ctx context.Context, c *Check) Result {
	s := c.NFTables
	out, err := presetCommand(ctx, s.Command)
	if err != nil {
		return Result{Err: err, Output: string(out)}
	}
	tables, rules := countNFT(out)
	switch {
	case tables == 0:
		return Result{Err: fmt.Errorf("nftables ruleset is empty"), Output: string(out)}
	case rules < s.MinRules:
		return Result{Err: fmt.Errorf("%d nftables rules, want at least %d", rules, s.MinRules), Output: string(out)}
	}
	return pass("%d tables, %d rules", tables, rules)
}

// countNFT counts tables and the rules inside chains of `nft list ruleset`.
// Inside a chain, the lines that are not rules are its declaration
// ("type filter hook input priority 0; policy accept;") and comments.
func countNFT(out []byte) (tables, rules int) {
	depth, inChain := 0, false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "table ") && depth == 0:
			tables++
		case strings.HasPrefix(line, "chain ") && depth == 1:
			inChain = true
		case line == "}":
		case inChain && depth == 2 && !strings.HasPrefix(line, "type ") && !strings.HasPrefix(line, "policy ") && !strings.HasPrefix(line, "comment "):
			rules++
		}
		depth += strings.Count(line, "{") - strings.Count(line, "}")
		if depth < 2 {
			inChain = false
		}
	}
	return tables, rules
}
