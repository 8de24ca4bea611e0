package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CgroupSpec: a container's or pod's cgroup still holds a process, and no
// process in it was killed by the OOM killer since the last run. Read from
// cgroup v2's cgroup.events and memory.events; on hosts where only cgroup v1
// has the memory controller, from memory.oom_control of memory_v1. Its
// event source is inotify on those files (and cgroup v1's OOM eventfd).
type CgroupSpec struct {
	Path     string `yaml:"path"`      // the cgroup v2 directory; relative to root unless absolute
	Root     string `yaml:"root"`      // where cgroup v2 is mounted, default /sys/fs/cgroup
	MemoryV1 string `yaml:"memory_v1"` // the cgroup v1 memory directory, for OOM kills where v2 has no memory controller

	oomSeen  uint64 // oom_kill at the last run
	oomKnown bool
}

func (s *CgroupSpec) compile(*Check) error {
	if s.Path == "" {
		return errors.New("path: required (the cgroup v2 directory)")
	}
	if s.Root == "" {
		s.Root = "/sys/fs/cgroup"
	}
	if !filepath.IsAbs(s.Path) {
		s.Path = filepath.Join(s.Root, s.Path)
	}
	return nil
}

func probeCgroup(ctx context.Context, c *Check) Result {
	s := c.Cgroup
	ev, err := readKeyed(filepath.Join(s.Path, "cgroup.events"))
	if errors.Is(err, os.ErrNotExist) {
		if _, derr := os.Stat(s.Path); derr != nil {
			return fail(fmt.Errorf("cgroup %s is gone", s.Path))
		}
		return fail(fmt.Errorf("cgroup %s has no cgroup.events: not a cgroup v2 directory", s.Path))
	}
	if err != nil {
		return fail(err)
	}
	if ev["populated"] != 1 {
		return fail(fmt.Errorf("cgroup %s: no process left (populated 0)", s.Path))
	}
	kills, known := s.oomKills()
	if known {
		seen, wasKnown := s.oomSeen, s.oomKnown
		s.oomSeen, s.oomKnown = kills, true
		if wasKnown && kills > seen {
			return fail(fmt.Errorf("cgroup %s: %d process(es) OOM-killed since the last run", s.Path, kills-seen))
		}
	}
	return pass("populated, %d OOM kills", kills)
}

// oomKills reads the cgroup's oom_kill count: v2 memory.events, else v1
// memory.oom_control (kernel 4.13+); known is false where neither exists.
func (s *CgroupSpec) oomKills() (n uint64, known bool) {
	if ev, err := readKeyed(filepath.Join(s.Path, "memory.events")); err == nil {
		return ev["oom_kill"], true
	}
	if s.MemoryV1 != "" {
		if ev, err := readKeyed(filepath.Join(s.MemoryV1, "memory.oom_control")); err == nil {
			return ev["oom_kill"], true
		}
	}
	return 0, false
}

// readKeyed reads a cgroup file of "key value" lines.
func readKeyed(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err == nil {
			m[k] = n
		}
	}
	return m, nil
}
