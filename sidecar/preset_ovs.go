package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// OVSSpec: the Open vSwitch daemon running with its database socket, found by
// reading /proc/*/cmdline directly (no fork of ps | grep).
type OVSSpec struct {
	Process string `yaml:"process"` // program name (argv[0] base name), default ovs-vswitchd
	Match   string `yaml:"match"`   // an argument must contain this, default db.sock
	Proc    string `yaml:"proc"`    // where procfs is mounted, default /proc

	lastPID string // where the daemon was last seen: one read instead of a scan
}

func (s *OVSSpec) compile(*Check) error {
	if s.Process == "" {
		s.Process = "ovs-vswitchd"
	}
	if s.Match == "" {
		s.Match = "db.sock"
	}
	if s.Proc == "" {
		s.Proc = "/proc"
	}
	return nil
}

func probeOVS(ctx context.Context, c *Check) Result {
	s := c.OVS
	if s.lastPID != "" && matchProcess(s.Proc, s.lastPID, s.Process, s.Match) == matched {
		return pass("%s running as pid %s", s.Process, s.lastPID)
	}
	pid, err := findProcess(ctx, s.Proc, s.Process, s.Match)
	s.lastPID = pid
	if err != nil {
		return fail(err)
	}
	return pass("%s running as pid %s", s.Process, pid)
}

// findProcess returns the pid of a process whose argv[0] base name is name
// and one of whose arguments contains match.
func findProcess(ctx context.Context, proc, name, match string) (string, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return "", err
	}
	sawName := false
	for _, e := range entries {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if !e.IsDir() || e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		switch matchProcess(proc, e.Name(), name, match) {
		case matched:
			return e.Name(), nil
		case nameOnly:
			sawName = true
		}
	}
	if sawName {
		return "", fmt.Errorf("%s is running but without %s", name, match)
	}
	return "", errors.New(name + " is not running")
}

type procMatch int

const (
	noMatch  procMatch = iota
	nameOnly           // the program, without the argument
	matched
)

// matchProcess reads one /proc/PID/cmdline. A process may exit between
// listing and reading: that is no match.
func matchProcess(proc, pid, name, match string) procMatch {
	cmdline, err := os.ReadFile(filepath.Join(proc, pid, "cmdline"))
	if err != nil || len(cmdline) == 0 {
		return noMatch
	}
	args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
	if filepath.Base(args[0]) != name {
		return noMatch
	}
	for _, a := range args[1:] {
		if strings.Contains(a, match) {
			return matched
		}
	}
	return nameOnly
}
