package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClusterSpec is one simulated cluster.
type ClusterSpec struct {
	Name string
	IPs  []string // the addresses DNS answers for it
	// Health is the URL its sidecar checks; "" (and no Checks) runs no
	// sidecar (and the cluster gets no key).
	Health string
	// Checks, when set, are its sidecar's checks instead of one http check
	// of Health: YAML flow maps, one per check.
	Checks []string
	// Probe is the plugin's active probe of the ingress; "" for none.
	Probe string
	// SidecarListen is the sidecar's own status address; "" picks a free
	// port on 127.0.0.1.
	SidecarListen string
	// SidecarTop are more top-level lines of its sidecar config
	// ("realtime_priority: 10").
	SidecarTop []string
	// SidecarPrefix is an argv the sidecar is started under (a shell that
	// moves itself into a cgroup, then runs exec of it).
	SidecarPrefix []string
}

// Options describe a stack. Zero durations and counts take the sidecar's
// and plugin's defaults.
type Options struct {
	Dir              string // keys, configs and logs go here
	CoreDNS, Sidecar string // binaries
	DNS, API         string // host:port of the DNS server and its push API
	Zones            []string
	Apps             []string // `app` lines without the keyword; none: every cluster serves every zone
	Clusters         []ClusterSpec

	Interval  time.Duration // sidecar check period
	Heartbeat time.Duration
	Fall      int // sidecar check hysteresis
	Rise      int
	Plugin    []string // extra lines inside the healthswitch block
	Server    []string // extra plugins in the server block (before healthswitch)
}

// Stack is a running DNS server plus the sidecars of its clusters.
type Stack struct {
	Opt      Options
	Keys     map[string][]byte
	Corefile string

	mu       sync.Mutex
	coredns  *Proc
	sidecars map[string]*Proc
	configs  map[string]string
}

// NewStack writes keys, the Corefile and sidecar configs into opt.Dir. Start
// runs them.
func NewStack(opt Options) (*Stack, error) {
	s := &Stack{Opt: opt, Keys: map[string][]byte{}, sidecars: map[string]*Proc{}, configs: map[string]string{}}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, err
	}
	for _, c := range opt.Clusters {
		if !c.hasSidecar() {
			continue
		}
		key, err := newKey()
		if err != nil {
			return nil, err
		}
		s.Keys[c.Name] = key
		if err := os.WriteFile(s.keyFile(c.Name), append(key, '\n'), 0o600); err != nil {
			return nil, err
		}
		listen := c.SidecarListen
		if listen == "" {
			p, err := FreePort("127.0.0.1")
			if err != nil {
				return nil, err
			}
			listen = fmt.Sprintf("127.0.0.1:%d", p)
		}
		path := filepath.Join(opt.Dir, "sidecar-"+c.Name+".yaml")
		if err := os.WriteFile(path, []byte(s.sidecarConfig(c, listen)), 0o600); err != nil {
			return nil, err
		}
		s.configs[c.Name] = path
	}
	s.Corefile = filepath.Join(opt.Dir, "Corefile")
	if err := os.WriteFile(s.Corefile, []byte(s.corefile()), 0o600); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Stack) keyFile(cluster string) string {
	return filepath.Join(s.Opt.Dir, cluster+".key")
}

func newKey() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return []byte(base64.StdEncoding.EncodeToString(b)), nil
}

func (s *Stack) corefile() string {
	o := s.Opt
	_, port, _ := net.SplitHostPort(o.DNS)
	host, _, _ := net.SplitHostPort(o.DNS)
	var b strings.Builder
	for i, z := range o.Zones {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s:%s", z, port)
	}
	b.WriteString(" {\n")
	fmt.Fprintf(&b, "    bind %s\n", host)
	for _, l := range o.Server {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	b.WriteString("    healthswitch {\n")
	for _, c := range o.Clusters {
		fmt.Fprintf(&b, "        cluster %s %s", c.Name, strings.Join(c.IPs, " "))
		if !c.hasSidecar() && c.Probe == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(" {\n")
		if c.Probe != "" {
			fmt.Fprintf(&b, "            probe %s\n", c.Probe)
		}
		if c.hasSidecar() {
			fmt.Fprintf(&b, "            key_file %s\n", s.keyFile(c.Name))
		}
		b.WriteString("        }\n")
	}
	for _, a := range o.Apps {
		fmt.Fprintf(&b, "        app %s\n", a)
	}
	fmt.Fprintf(&b, "        listen %s\n", o.API)
	for _, l := range o.Plugin {
		fmt.Fprintf(&b, "        %s\n", l)
	}
	b.WriteString("    }\n}\n")
	return b.String()
}

func (s *Stack) sidecarConfig(c ClusterSpec, listen string) string {
	o := s.Opt
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: %s\nkey_file: %s\nreport_to: [http://%s]\n", c.Name, s.keyFile(c.Name), o.API)
	if o.Interval > 0 {
		fmt.Fprintf(&b, "interval: %s\n", o.Interval)
	}
	if o.Heartbeat > 0 {
		fmt.Fprintf(&b, "heartbeat: %s\n", o.Heartbeat)
	}
	for _, l := range c.SidecarTop {
		fmt.Fprintf(&b, "%s\n", l)
	}
	if len(c.Checks) > 0 {
		fmt.Fprintf(&b, "listen: %s\nchecks:\n  - %s\n", listen, strings.Join(c.Checks, "\n  - "))
		return b.String()
	}
	fmt.Fprintf(&b, "listen: %s\nchecks:\n  - name: web\n    http: {url: %s, expect_status: [200]}\n", listen, c.Health)
	if o.Fall > 0 {
		fmt.Fprintf(&b, "    fall: %d\n", o.Fall)
	}
	if o.Rise > 0 {
		fmt.Fprintf(&b, "    rise: %d\n", o.Rise)
	}
	return b.String()
}

func (c ClusterSpec) hasSidecar() bool { return c.Health != "" || len(c.Checks) > 0 }

// SidecarConfig is the path of a cluster's sidecar config.
func (s *Stack) SidecarConfig(cluster string) string { return s.configs[cluster] }

// Start starts the DNS server, waits until it answers, then starts every
// sidecar.
func (s *Stack) Start(ctx context.Context) error {
	if err := s.StartCoreDNS(ctx); err != nil {
		return err
	}
	for _, c := range s.Opt.Clusters {
		if !c.hasSidecar() {
			continue
		}
		if err := s.StartSidecar(c.Name); err != nil {
			s.Stop()
			return err
		}
	}
	return nil
}

func (s *Stack) logFile(name string) (*os.File, error) {
	return os.OpenFile(filepath.Join(s.Opt.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// StartCoreDNS starts bin/coredns and waits until its push API and DNS
// answer.
func (s *Stack) StartCoreDNS(ctx context.Context) error {
	f, err := s.logFile("coredns")
	if err != nil {
		return err
	}
	defer f.Close()
	p, err := StartProc("coredns", f, s.Opt.CoreDNS, "-conf", s.Corefile)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.coredns = p
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r := NewResolver(s.Opt.DNS)
	for {
		if p.Exited() {
			return fmt.Errorf("coredns exited at start:\n%s", s.LogTail("coredns", 20))
		}
		if _, err := GetStatus(s.Opt.API); err == nil {
			if _, err := r.A(s.Opt.Zones[0]); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			p.Kill()
			return fmt.Errorf("coredns did not answer: %w\n%s", ctx.Err(), s.LogTail("coredns", 20))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// CoreDNS is the running DNS server process, nil when none.
func (s *Stack) CoreDNS() *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.coredns
}

// StartSidecar starts (or restarts) the sidecar of cluster.
func (s *Stack) StartSidecar(cluster string) error {
	cfg, ok := s.configs[cluster]
	if !ok {
		return fmt.Errorf("cluster %s has no sidecar", cluster)
	}
	f, err := s.logFile("sidecar-" + cluster)
	if err != nil {
		return err
	}
	defer f.Close()
	var prefix []string
	for _, c := range s.Opt.Clusters {
		if c.Name == cluster {
			prefix = c.SidecarPrefix
		}
	}
	p, err := StartProc("sidecar "+cluster, f, append(slices.Clip(prefix), s.Opt.Sidecar, "-config", cfg)...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.sidecars[cluster] = p
	s.mu.Unlock()
	return nil
}

// Sidecar is the running sidecar of cluster, nil when none.
func (s *Stack) Sidecar(cluster string) *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sidecars[cluster]
}

// Procs lists every child process started and not yet stopped.
func (s *Stack) Procs() []*Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Proc
	if s.coredns != nil {
		out = append(out, s.coredns)
	}
	for _, c := range s.Opt.Clusters {
		if p := s.sidecars[c.Name]; p != nil {
			out = append(out, p)
		}
	}
	return out
}

// Stop stops the sidecars, then the DNS server, each within a bound.
func (s *Stack) Stop() {
	s.mu.Lock()
	procs := make([]*Proc, 0, len(s.sidecars)+1)
	for _, p := range s.sidecars {
		procs = append(procs, p)
	}
	s.sidecars = map[string]*Proc{}
	cd := s.coredns
	s.coredns = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop() }()
	}
	wg.Wait()
	if cd != nil {
		cd.Stop()
	}
}

// WaitStates waits until every named cluster is in state want.
func (s *Stack) WaitStates(ctx context.Context, want string, clusters ...string) error {
	var last error
	for {
		st, err := GetStatus(s.Opt.API)
		if err == nil {
			last = nil
			for _, c := range clusters {
				if got := st.ClusterState(c); got != want {
					last = fmt.Errorf("cluster %s is %q, want %q", c, got, want)
					break
				}
			}
			if last == nil {
				return nil
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return errors.Join(last, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// LogTail returns the last n lines of a child's log.
func (s *Stack) LogTail(name string, n int) string {
	b, _ := os.ReadFile(filepath.Join(s.Opt.Dir, name+".log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreePort returns a port on host, free for TCP and UDP a moment ago, for
// a server about to start. It is drawn at random below the kernel's
// ephemeral range (ip_local_port_range, 32768 and up by default), where the
// kernel never hands out ports on its own: an outgoing connection or a :0
// listener of another server cannot take it between this call and the
// server's bind. A port is not handed out twice by one process.
func FreePort(host string) (int, error) {
	lo, hi := portRange()
	for range 1000 {
		p := lo + mrand.IntN(hi-lo)
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		addr := net.JoinHostPort(host, strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port on %s below the ephemeral range", host)
}

var handedOut sync.Map

// portRange is [lo, hi): from 20000 up to the start of the kernel's
// ephemeral port range (or 32768 if it cannot be read).
func portRange() (int, int) {
	hi := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 21000 {
				hi = n
			}
		}
	}
	return 20000, hi
}
