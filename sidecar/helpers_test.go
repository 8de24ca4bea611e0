package sidecar

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// newCheck compiles one check from its YAML, as the loader would, with a 1 s
// default interval unless the YAML sets one.
func newCheck(t testing.TB, src string) *Check {
	t.Helper()
	var c Check
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decode %q: %v", src, err)
	}
	if c.Name == "" {
		c.Name = "test"
	}
	if err := c.compile(time.Second); err != nil {
		t.Fatalf("compile %q: %v", src, err)
	}
	t.Cleanup(c.Close)
	return &c
}

// expect runs c once and checks healthy and that the reason contains want.
func expect(t testing.TB, c *Check, healthy bool, want string) Result {
	t.Helper()
	r := c.Run(context.Background())
	if r.Healthy != healthy || !strings.Contains(r.Why(), want) {
		t.Errorf("healthy=%v why=%q output=%q; want healthy=%v and why containing %q", r.Healthy, r.Why(), r.Output, healthy, want)
	}
	return r
}

// onPath runs f with PATH set to dir alone, so f can show that the code it
// runs forks nothing (an empty dir) or forks exactly the programs linked
// into dir.
func onPath(t *testing.T, dir string, f func()) {
	t.Helper()
	path := os.Getenv("PATH")
	os.Setenv("PATH", dir)
	defer os.Setenv("PATH", path)
	f()
}

// programs links each named program, found on the current PATH, into a
// new folder under the name given: {"iptables": "iptables-nft"}.
func programs(t *testing.T, links map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, prog := range links {
		p, err := exec.LookPath(prog)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
