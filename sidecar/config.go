// Package sidecar is the in-cluster prober of healthswitch: it runs checks on
// their own timers, debounces them, and pushes signed reports to the DNS
// servers at once on any change and on a heartbeat otherwise.
package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/report"
	"gopkg.in/yaml.v3"
)

// Defaults of the top-level fields.
const (
	DefaultInterval  = 100 * time.Millisecond
	DefaultHeartbeat = 250 * time.Millisecond
	DefaultListen    = "127.0.0.1:9100"
)

// Config is the sidecar's YAML file (Contract 4). Durations are Go duration
// strings; they are parsed at load time into the unexported fields.
type Config struct {
	Cluster   string   `yaml:"cluster"`
	KeyFile   KeyFiles `yaml:"key_file"`
	ReportTo  []string `yaml:"report_to"`
	Interval  string   `yaml:"interval"`
	Heartbeat string   `yaml:"heartbeat"`
	Listen    string   `yaml:"listen"`
	Checks    []*Check `yaml:"checks"`

	Ingress []*IngressAction `yaml:"ingress"` // told to stop/resume by POST /v1/distribution

	Key          []byte        `yaml:"-"`
	Keys         [][]byte      `yaml:"-"` // every key_file; Key is the first
	IntervalD    time.Duration `yaml:"-"`
	HeartbeatD   time.Duration `yaml:"-"`
	reportToURLs []string
}

// Load reads, decodes and validates a config file. A relative key_file is
// taken relative to the config file's folder.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b, filepath.Dir(path))
}

// Parse decodes and validates a config; dir resolves a relative key_file.
func Parse(data []byte, dir string) (*Config, error) {
	cfg := &Config{
		Interval:  DefaultInterval.String(),
		Heartbeat: DefaultHeartbeat.String(),
		Listen:    DefaultListen,
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, err
	}
	if err := cfg.validate(dir); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (cfg *Config) validate(dir string) error {
	var err error
	if cfg.Cluster == "" {
		return errors.New("cluster: required")
	}
	if len(cfg.KeyFile) == 0 || slices.Contains(cfg.KeyFile, "") {
		return errors.New("key_file: required")
	}
	for _, kf := range cfg.KeyFile {
		if !filepath.IsAbs(kf) && dir != "" {
			kf = filepath.Join(dir, kf)
		}
		key, err := report.LoadKey(kf)
		if err != nil {
			return fmt.Errorf("key_file: %w", err)
		}
		cfg.Keys = append(cfg.Keys, key)
	}
	cfg.Key = cfg.Keys[0]
	if len(cfg.ReportTo) == 0 {
		return errors.New("report_to: at least one URL is required")
	}
	for i, raw := range cfg.ReportTo {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("report_to[%d]: %q is not an http:// or https:// URL", i, raw)
		}
		cfg.reportToURLs = append(cfg.reportToURLs, strings.TrimRight(raw, "/")+"/v1/report")
	}
	if cfg.IntervalD, err = positiveDuration("interval", cfg.Interval); err != nil {
		return err
	}
	if cfg.HeartbeatD, err = positiveDuration("heartbeat", cfg.Heartbeat); err != nil {
		return err
	}
	if cfg.Listen == "" {
		return errors.New("listen: required (default " + DefaultListen + ")")
	}
	if len(cfg.Checks) == 0 {
		return errors.New("checks: at least one check is required")
	}
	seen := map[string]int{}
	for i, c := range cfg.Checks {
		if c == nil {
			return fmt.Errorf("checks[%d]: empty entry", i)
		}
		if j, dup := seen[c.Name]; dup && c.Name != "" {
			return fmt.Errorf("checks[%d] (%s): duplicate name, first used by checks[%d]", i, c.Name, j)
		}
		seen[c.Name] = i
		if err := c.compile(cfg.IntervalD); err != nil {
			if c.Name == "" {
				return fmt.Errorf("checks[%d]: %w", i, err)
			}
			return fmt.Errorf("checks[%d] (%s): %w", i, c.Name, err)
		}
	}
	return compileIngress(cfg.Ingress)
}

// KeyFiles is key_file: one path, or a list during a key rollover. The
// first key signs reports; every key verifies the DNS servers'
// notifications, which they sign with the first key of their own list.
type KeyFiles []string

// UnmarshalYAML takes a single path as well as a list.
func (k *KeyFiles) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*k = KeyFiles{n.Value}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*k = list
	return nil
}

// Targets returns the full push URLs (<report_to>/v1/report).
func (cfg *Config) Targets() []string { return cfg.reportToURLs }

func positiveDuration(field, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration (e.g. 100ms, 2s)", field, s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s: %s must be positive", field, s)
	}
	return d, nil
}
