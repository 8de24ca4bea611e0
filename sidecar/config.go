// Package sidecar is the in-cluster prober of healthswitch: it runs checks on
// their own timers, debounces them, and pushes signed reports to the DNS
// servers at once on any change and on a heartbeat otherwise.
package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/healthswitch/healthswitch/internal/redact"
	"github.com/healthswitch/healthswitch/report"
)

// Defaults of the top-level fields.
const (
	DefaultInterval  = 100 * time.Millisecond
	DefaultHeartbeat = 250 * time.Millisecond
	DefaultListen    = "127.0.0.1:9100"
)

// Config is the sidecar's YAML file (Contract 4).
type Config struct {
	Cluster   string   `yaml:"cluster"`
	KeyFile   KeyFiles `yaml:"key_file"`
	ReportTo  []string `yaml:"report_to"`
	Interval  Duration `yaml:"interval"`
	Heartbeat Duration `yaml:"heartbeat"`
	Listen    string   `yaml:"listen"`
	Checks    []*Check `yaml:"checks"`

	// RealtimePriority runs the sidecar's threads under SCHED_FIFO at this
	// priority (1-99); 0, the default, leaves them at the normal policy.
	RealtimePriority int `yaml:"realtime_priority"`

	Ingress []*IngressAction `yaml:"ingress"` // told to stop/resume by POST /v1/distribution

	Key  []byte   `yaml:"-"`
	Keys [][]byte `yaml:"-"` // every key_file; Key is the first
	// Warnings are what loading found doubtful but not wrong (a key file
	// others can read); `check` prints them, the service logs them.
	Warnings     []string `yaml:"-"`
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
		Interval:  Duration{Duration: DefaultInterval},
		Heartbeat: Duration{Duration: DefaultHeartbeat},
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
	if cfg.Cluster == "" {
		return errors.New("cluster: required")
	}
	if !report.ClusterName.MatchString(cfg.Cluster) {
		return fmt.Errorf("cluster %q: use lower-case letters, digits, '-' and '_', as in the Corefile", cfg.Cluster)
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
		if w := report.KeyFileWarning(kf); w != "" {
			cfg.Warnings = append(cfg.Warnings, "key_file: "+w)
		}
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
	if err := cfg.Interval.within("interval", MinInterval, MaxInterval); err != nil {
		return err
	}
	if err := cfg.Heartbeat.within("heartbeat", MinHeartbeat, MaxHeartbeat); err != nil {
		return err
	}
	if err := checkListen(cfg.Listen); err != nil {
		return err
	}
	if cfg.RealtimePriority < 0 || cfg.RealtimePriority > MaxRealtimePriority {
		return fmt.Errorf("realtime_priority %d: a SCHED_FIFO priority is 1 to %d (0: the normal scheduler)", cfg.RealtimePriority, MaxRealtimePriority)
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
		if err := c.compile(cfg.Interval.Duration); err != nil {
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

// checkListen validates the status server's address as the server will use
// it, so `check` catches what would only fail at start.
func checkListen(addr string) error {
	if addr == "" {
		return errors.New("listen: required (default " + DefaultListen + ")")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen: %q: %v", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("listen: %q: port %q is not a number in 0-65535", addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return fmt.Errorf("listen: %q: host %q is not an IP address or a host name", addr, host)
	}
	return nil
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

// shownTargets is report_to as logs may show it: without passwords or tokens.
func (cfg *Config) shownTargets() []string {
	out := make([]string, len(cfg.ReportTo))
	for i, u := range cfg.ReportTo {
		out[i] = redact.URL(u)
	}
	return out
}
