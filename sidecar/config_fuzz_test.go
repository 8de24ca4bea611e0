package sidecar

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Loading any config either fails with an error or yields one the sidecar
// can run: every check compiled within the bounds, every target a push URL.
func FuzzParse(f *testing.F) {
	for _, seed := range parseSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkParse(t, data) })
}

// parseSeeds: the configs of the table tests and a short valid one.
func parseSeeds() [][]byte {
	var seeds [][]byte
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, s := range files {
		if b, err := os.ReadFile(s); err == nil {
			seeds = append(seeds, b)
		}
	}
	return append(seeds, []byte("cluster: east\nkey_file: test.key\nreport_to: [http://a:1]\nlisten: '[::1]:0'\ninterval: 1s\nheartbeat: 20ms\nchecks: [{name: x, preset: pods, fall: 100, rise: 1, interval: 2s, timeout: 1ms}]\n"))
}

func checkParse(t testing.TB, data []byte) {
	// The loader reads the files a config names (key_file; a DSN's
	// passfile); devices and pseudo files are not what this target is
	// about, and /dev/stdin would wait for ever.
	for _, p := range [][]byte{[]byte("/dev"), []byte("/proc"), []byte("/sys"), []byte("passfile"), []byte("service")} {
		if bytes.Contains(data, p) {
			return
		}
	}
	cfg, err := Parse(data, "testdata")
	if err != nil {
		if cfg != nil {
			t.Fatal("a config with an error")
		}
		return
	}
	if len(cfg.Key) < 16 || cfg.Cluster == "" || len(cfg.Targets()) != len(cfg.ReportTo) || len(cfg.Checks) == 0 {
		t.Fatalf("accepted %+v", cfg)
	}
	if err := checkListen(cfg.Listen); err != nil {
		t.Fatalf("accepted listen %q: %v", cfg.Listen, err)
	}
	if cfg.Interval.Duration < MinInterval || cfg.Interval.Duration > MaxInterval ||
		cfg.Heartbeat.Duration < MinHeartbeat || cfg.Heartbeat.Duration > MaxHeartbeat {
		t.Fatalf("accepted interval %s heartbeat %s", cfg.Interval, cfg.Heartbeat)
	}
	for _, c := range cfg.Checks {
		if probers[c.Kind()] == nil || c.Period() < MinInterval || c.Period() > MaxInterval ||
			c.Deadline() <= 0 || c.Deadline() >= c.Period() ||
			c.fall < 1 || c.fall > MaxFallRise || c.rise < 1 || c.rise > MaxFallRise {
			t.Fatalf("accepted check %s: kind %q interval %s timeout %s fall %d rise %d", c.Name, c.Kind(), c.Period(), c.Deadline(), c.fall, c.rise)
		}
		c.Close()
	}
}

// The fuzz body on its seeds, without the fuzzer: what one execution costs
// beside the fuzzer's own work (docs/fuzzing.md).
func BenchmarkFuzzParseBody(b *testing.B) {
	seeds := parseSeeds()
	for b.Loop() {
		for _, s := range seeds {
			checkParse(b, s)
		}
	}
}
