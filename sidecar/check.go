package sidecar

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/internal/redact"
)

// Version is sent in the User-Agent of HTTP checks and pushes; main sets it.
var Version = "dev"

// Per-check defaults.
const (
	DefaultFall = 1 // fail within one interval: speed is the point
	DefaultRise = 2 // but come back only when it holds
)

// maxDetail bounds the detail carried in a report, so a chatty check cannot
// push the report past the receiver's body limit.
const maxDetail = 256

// Check is one configured check: the YAML fields, exactly one kind block
// (a preset name fills in its block with defaults), and what load compiled.
type Check struct {
	Name     string    `yaml:"name"`
	Preset   string    `yaml:"preset"`
	Interval *Duration `yaml:"interval"` // default: the top-level interval
	Timeout  *Duration `yaml:"timeout"`  // default: 80% of the interval
	Fall     int       `yaml:"fall"`
	Rise     int       `yaml:"rise"`
	Critical *bool     `yaml:"critical"`
	Watch    string    `yaml:"watch"` // auto | on | off: run at once on an event of the kind's source (watch.go)

	HTTP     *HTTPSpec     `yaml:"http"`
	TCP      *TCPSpec      `yaml:"tcp"`
	Exec     *ExecSpec     `yaml:"exec"`
	DNS      *DNSSpec      `yaml:"dns"`
	Postgres *PostgresSpec `yaml:"postgres"`
	MySQL    *MySQLSpec    `yaml:"mysql"`
	Redis    *RedisSpec    `yaml:"redis"`
	GRPC     *GRPCSpec     `yaml:"grpc"`
	Pods     *PodsSpec     `yaml:"pods"`
	IPTables *IPTablesSpec `yaml:"iptables"`
	NFTables *NFTablesSpec `yaml:"nftables"`
	OVS      *OVSSpec      `yaml:"ovs"`
	CRIO     *CRIOSpec     `yaml:"crio"`
	VM       *VMSpec       `yaml:"vm"`
	Process  *ProcessSpec  `yaml:"process"`
	Cgroup   *CgroupSpec   `yaml:"cgroup"`

	kind       string
	interval   time.Duration
	timeout    time.Duration
	critical   bool
	fall, rise int
	watch      bool          // the kind's event source runs beside polling
	passed     chan struct{} // a run passed: a source waiting to re-establish itself tries at once
}

// Result is the outcome of one run of a check.
type Result struct {
	Healthy  bool
	Err      error  // why it is unhealthy
	Detail   string // a short note when healthy ("HTTP 200")
	Output   string // captured output, bounded
	At       time.Time
	Duration time.Duration
}

// Why is the one-line reason shown in reports, /status, logs and the check
// table. Secrets are taken out first: an error quoting a check's URL or DSN
// would otherwise carry its password to every DNS server.
func (r Result) Why() string {
	s := r.Detail
	if r.Err != nil {
		s = r.Err.Error()
	}
	s = redact.Text(s)
	if len(s) > maxDetail {
		s = s[:maxDetail] + "…"
	}
	return s
}

func pass(format string, args ...any) Result {
	return Result{Healthy: true, Detail: fmt.Sprintf(format, args...)}
}

func fail(err error) Result { return Result{Err: err} }

// prober is the one shape every check kind has.
type prober func(ctx context.Context, c *Check) Result

// spec is a kind's option block: compile validates it, fills its defaults and
// prepares what runs need (regexps, clients).
type spec interface {
	compile(c *Check) error
}

// probers is the registry of check kinds; the presets are kinds too.
var probers = map[string]prober{
	"http":     probeHTTP,
	"tcp":      probeTCP,
	"exec":     probeExec,
	"dns":      probeDNS,
	"postgres": probePostgres,
	"mysql":    probeMySQL,
	"redis":    probeRedis,
	"grpc":     probeGRPC,
	"pods":     probePods,
	"iptables": probeIPTables,
	"nftables": probeNFTables,
	"ovs":      probeOVS,
	"crio":     probeCRIO,
	"vm":       probeVM,
	"process":  probeProcess,
	"cgroup":   probeCgroup,
}

// presets fill in an empty block so `preset: NAME` needs nothing else.
var presets = map[string]func(c *Check){
	"pods":     func(c *Check) { c.Pods = or(c.Pods) },
	"iptables": func(c *Check) { c.IPTables = or(c.IPTables) },
	"nftables": func(c *Check) { c.NFTables = or(c.NFTables) },
	"ovs":      func(c *Check) { c.OVS = or(c.OVS) },
	"crio":     func(c *Check) { c.CRIO = or(c.CRIO) },
	"vm":       func(c *Check) { c.VM = or(c.VM) },
}

func or[T any](p *T) *T {
	if p == nil {
		return new(T)
	}
	return p
}

// blocks lists the kind blocks that are set, by kind name.
func (c *Check) blocks() map[string]spec {
	m := map[string]spec{}
	add := func(kind string, set bool, s spec) {
		if set {
			m[kind] = s
		}
	}
	add("http", c.HTTP != nil, c.HTTP)
	add("tcp", c.TCP != nil, c.TCP)
	add("exec", c.Exec != nil, c.Exec)
	add("dns", c.DNS != nil, c.DNS)
	add("postgres", c.Postgres != nil, c.Postgres)
	add("mysql", c.MySQL != nil, c.MySQL)
	add("redis", c.Redis != nil, c.Redis)
	add("grpc", c.GRPC != nil, c.GRPC)
	add("pods", c.Pods != nil, c.Pods)
	add("iptables", c.IPTables != nil, c.IPTables)
	add("nftables", c.NFTables != nil, c.NFTables)
	add("ovs", c.OVS != nil, c.OVS)
	add("crio", c.CRIO != nil, c.CRIO)
	add("vm", c.VM != nil, c.VM)
	add("process", c.Process != nil, c.Process)
	add("cgroup", c.Cgroup != nil, c.Cgroup)
	return m
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// compile validates the check and fills its defaults; interval is the
// top-level default period.
func (c *Check) compile(interval time.Duration) error {
	if c.Name == "" {
		return errors.New("name: required")
	}
	if !nameRE.MatchString(c.Name) || len(c.Name) > 64 {
		return fmt.Errorf("name %q: use letters, digits, '.', '_' and '-' (at most 64)", c.Name)
	}
	if c.Preset != "" {
		fill, ok := presets[c.Preset]
		if !ok {
			return fmt.Errorf("preset %q: unknown (one of %s)", c.Preset, strings.Join(keys(presets), ", "))
		}
		fill(c)
	}
	blocks := c.blocks()
	switch {
	case len(blocks) == 0:
		return fmt.Errorf("no check kind: set one of %s, or preset", strings.Join(keys(probers), ", "))
	case len(blocks) > 1:
		return fmt.Errorf("more than one check kind: %s", strings.Join(keys(blocks), ", "))
	}
	for kind := range blocks {
		c.kind = kind
	}
	if c.Preset != "" && c.Preset != c.kind {
		return fmt.Errorf("preset %s with a %s block: the block must match the preset", c.Preset, c.kind)
	}
	if err := c.compileTiming(interval); err != nil {
		return err
	}
	if err := c.compileWatch(); err != nil {
		return err
	}
	if err := blocks[c.kind].compile(c); err != nil {
		return fmt.Errorf("%s: %w", c.kind, err)
	}
	return nil
}

func (c *Check) compileTiming(interval time.Duration) error {
	c.interval = interval
	if c.Interval != nil {
		if err := c.Interval.within("interval", MinInterval, MaxInterval); err != nil {
			return err
		}
		c.interval = c.Interval.Duration
	}
	c.timeout = c.interval * 8 / 10
	if c.Timeout != nil {
		if err := c.Timeout.within("timeout", MinTimeout, MaxInterval); err != nil {
			return err
		}
		c.timeout = c.Timeout.Duration
	}
	if c.timeout >= c.interval {
		return fmt.Errorf("timeout %s must be less than interval %s", c.timeout, c.interval)
	}
	var err error
	if c.fall, err = count("fall", c.Fall, DefaultFall); err != nil {
		return err
	}
	if c.rise, err = count("rise", c.Rise, DefaultRise); err != nil {
		return err
	}
	c.critical = c.Critical == nil || *c.Critical
	return nil
}

// count validates fall or rise: 0 (unset) takes the default.
func count(field string, n, def int) (int, error) {
	switch {
	case n == 0:
		return def, nil
	case n < 1 || n > MaxFallRise:
		return 0, fmt.Errorf("%s %d: must be between 1 and %d", field, n, MaxFallRise)
	}
	return n, nil
}

// Kind is the check's kind (for a preset, the preset's name).
func (c *Check) Kind() string { return c.kind }

// IsCritical says whether a failure of this check makes the cluster unhealthy.
func (c *Check) IsCritical() bool { return c.critical }

// Period and Deadline are the compiled interval and timeout.
func (c *Check) Period() time.Duration   { return c.interval }
func (c *Check) Deadline() time.Duration { return c.timeout }

// Run runs the check once under its timeout. It never panics and always
// returns a Result with At and Duration set.
func (c *Check) Run(ctx context.Context) (r Result) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			r = fail(fmt.Errorf("check panicked: %v", p))
			r.Output = string(debug.Stack())
			r.Output = r.Output[:min(len(r.Output), 4096)]
		}
		r.At, r.Duration = start, time.Since(start)
		r.Output = redact.Text(r.Output)
		if !r.Healthy && r.Err == nil {
			r.Err = errors.New("unhealthy")
		}
		if !r.Healthy && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			r.Err = fmt.Errorf("timed out after %s: %w", c.timeout, r.Err)
		}
	}()
	return probers[c.kind](ctx, c)
}

// Close releases what a check keeps between runs (a database, libvirt,
// CRI, systemd or netlink connection): the kind blocks that keep one have a
// close method.
func (c *Check) Close() {
	for _, s := range c.blocks() {
		if k, ok := s.(interface{ close() }); ok {
			k.close()
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// within runs f in a goroutine of its own, for a call that takes no
// context, and returns its result, or ctx's error once ctx ends first. A
// call left behind goes on until it returns; its late result is handed to
// abandon, if set (to close a connection nobody will use).
func within[T any](ctx context.Context, f func() (T, error), abandon func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		if abandon != nil {
			go func() {
				if r := <-done; r.err == nil {
					abandon(r.v)
				}
			}()
		}
		var zero T
		return zero, ctx.Err()
	}
}

// onKept runs once, which uses the connection a check keeps between runs
// (dialing one when there is none, dropping it on an error). When once
// fails on a connection kept from an earlier run, that connection may have
// died with a restart of the server that is already over (libvirtd or a
// database restarted, systemctl daemon-reexec): unless stale says the
// error is not of that kind (nil: any error may be), once runs one more
// time, on a fresh connection, before the check calls the thing down.
func onKept[T any](ctx context.Context, kept bool, once func() (T, error), stale func(error) bool) (T, error) {
	v, err := once()
	if err != nil && kept && ctx.Err() == nil && (stale == nil || stale(err)) {
		v, err = once()
	}
	return v, err
}
