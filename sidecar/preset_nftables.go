package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
)

// NFTablesSpec: an nftables ruleset present, read over netlink (or from a
// command's `nft list ruleset` output, when command is set). An empty
// ruleset is the fault.
type NFTablesSpec struct {
	Netns    string   `yaml:"netns"`     // network namespace: a name from `ip netns` or a path; default the sidecar's
	Command  []string `yaml:"command"`   // fork this instead of reading netlink, e.g. [nft, list, ruleset]
	MinRules int      `yaml:"min_rules"` // rules needed inside chains; default 0: any table will do

	reader *nftReader
}

func (s *NFTablesSpec) compile(*Check) error {
	s.reader = newNFTReader(s.Netns)
	if s.MinRules < 0 {
		return fmt.Errorf("min_rules %d: must not be negative", s.MinRules)
	}
	return nil
}

func probeNFTables(ctx context.Context, c *Check) Result {
	s := c.NFTables
	var out []byte
	var tables, rules int
	if len(s.Command) > 0 {
		var err error
		if out, err = presetCommand(ctx, s.Command); err != nil {
			return Result{Err: err, Output: string(out)}
		}
		tables, rules = countNFT(out)
	} else {
		var err error
		if tables, rules, err = s.reader.count(nil); err != nil {
			return fail(err)
		}
	}
	switch {
	case tables == 0:
		return Result{Err: fmt.Errorf("nftables ruleset is empty"), Output: string(out)}
	case rules < s.MinRules:
		return Result{Err: fmt.Errorf("%d nftables rules, want at least %d", rules, s.MinRules), Output: string(out)}
	}
	return pass("%d tables, %d rules", tables, rules)
}

// watchNFTables wakes the check on every nftables commit in its namespace.
func watchNFTables(ctx context.Context, c *Check, wake func()) error {
	return watchNFT(ctx, c, c.NFTables.reader, wake)
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

func (s *NFTablesSpec) close() { s.reader.close() }
