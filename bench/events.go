package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/google/nftables"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/healthswitch/healthswitch/internal/cridouble"
	"github.com/healthswitch/healthswitch/internal/demo"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// Event-driven checks (Contract 8): fault → changed DNS answer for each
// event source, beside the same fault under 100 ms polling (watch: off), in
// the same run. One lane per source and mode; each lane is a cluster with
// its own sidecar, and a name it shares with an always-up spare cluster.
// One lane at a time, on a DNS server of its own: a source's modes one
// after the other.

const (
	eventsSafety   = time.Second            // the watched checks' safety poll
	eventsPolling  = 100 * time.Millisecond // the baseline's interval
	eventsPollDNS  = time.Millisecond       // DNS polled this often while a fault is on
	eventsBudget   = 15 * time.Minute
	benchServerEnv = "HS_BENCH_HTTP_SERVER"
)

// laneSources are the event sources measured, in order, and laneMakers
// their lanes.
var (
	laneSources = []string{"process", "cgroup", "http", "postgres", "postgres-fast", "postgres-lockfile", "postgres-fast-lockfile", "postgres-host", "postgres-fast-host", "postgres-fast-host-normal", "nftables", "vm", "pods"}
	laneMakers  = map[string]func(string, string) (*lane, error){"process": processLane, "cgroup": cgroupLane, "http": httpLane,
		"postgres":                  pgMaker("postgres", syscall.SIGQUIT, false, 0),
		"postgres-fast":             pgMaker("postgres-fast", syscall.SIGINT, false, 0),
		"postgres-lockfile":         pgMaker("postgres-lockfile", syscall.SIGQUIT, true, 0),
		"postgres-fast-lockfile":    pgMaker("postgres-fast-lockfile", syscall.SIGINT, true, 0),
		"postgres-host":             pgMaker("postgres-host", syscall.SIGQUIT, true, hostRealtime),
		"postgres-fast-host":        pgMaker("postgres-fast-host", syscall.SIGINT, true, hostRealtime),
		"postgres-fast-host-normal": pgMaker("postgres-fast-host-normal", syscall.SIGINT, true, hostNormal),
		"nftables":                  nftLane, "vm": vmLane, "pods": criLane}
)

// eventSources limits the events section to these sources (the -sources
// flag); empty: all. eventsFaults is how many faults each lane injects (the
// -faults flag).
var (
	eventSources string
	eventsFaults = 100
)

// EventsResult is one source under one mode.
type EventsResult struct {
	Source   string  `json:"source"`
	Mode     string  `json:"mode"` // events (1 s safety poll) | polling (100 ms, watch: off)
	Fault    string  `json:"fault"`
	Faults   int     `json:"faults"`
	Timeouts int     `json:"timeouts"`
	P95      float64 `json:"p95_ms"`
	Client   Dist    `json:"client_ms"`   // fault injected → first DNS answer without the cluster
	Detected Dist    `json:"detected_ms"` // fault injected → the sidecar's failing run (observed_at)
	Note     string  `json:"note,omitempty"`
	raw      []float64
	detRaw   []float64
	injected []time.Time
}

// A bench binary started with benchServerEnv set is an HTTP server with
// keep-alive on that address, so a lane can kill a real server process.
func init() {
	if addr := os.Getenv(benchServerEnv); addr != "" {
		err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// lane is one source under one mode: how to break it and repair it, and
// the sidecar check that watches it.
type lane struct {
	source, mode, fault string
	check               string // YAML flow map
	setup               func() error
	inject, restore     func() error
	close               func()
	// host, when not 0, lays the lane out as two hosts: the cluster side
	// (what the fault hits, and the sidecar) on CPU 1, the DNS side
	// (coredns and this process, the client) on CPU 0; the sidecar's
	// realtime_priority is host, or the normal policy for hostNormal.
	host int
	res  EventsResult
}

// Two hosts on one machine: the CPUs of the cluster side and the DNS side
// of a host lane, and the sidecar's real-time priority there.
const (
	clusterCPU, dnsCPU = 1, 0
	hostRealtime       = 10
	hostNormal         = -1 // two hosts, the sidecar at the normal policy
)

func (b *bencher) events(ctx context.Context) []EventsResult {
	dir := b.subdir("events")
	deadline := time.Now().Add(eventsBudget)
	var out []EventsResult
	for _, source := range laneSources {
		if eventSources != "" && !strings.Contains(","+eventSources+",", ","+source+",") {
			continue
		}
		for _, mode := range []string{"events", "polling"} {
			out = append(out, b.eventsLane(ctx, filepath.Join(dir, source+"-"+mode), source, mode, deadline)...)
		}
	}
	return out
}

// eventsLane runs one lane alone, on a DNS server of its own, with nothing
// of the other lanes alive: their servers, daemons and sidecars (polled
// ones run every 100 ms) would load the machine while a fault is timed in
// milliseconds.
func (b *bencher) eventsLane(ctx context.Context, dir, source, mode string, deadline time.Time) []EventsResult {
	// A lane that cannot run still has its row, saying why: a table
	// without it would read as if the source had not been asked for.
	failed := func(what string, err error) []EventsResult {
		log.Printf("events %s/%s: %s%v", source, mode, what, err)
		first, _, _ := strings.Cut(err.Error(), "\n")
		return []EventsResult{{Source: source, Mode: mode, Note: "not run: " + what + first}}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return failed("", err)
	}
	l, err := laneMakers[source](dir, mode)
	if err != nil {
		return failed("", err)
	}
	if l.close != nil {
		defer l.close()
	}
	if err := l.setup(); err != nil {
		return failed("setup: ", err)
	}
	res, err := b.eventsRun(ctx, dir, l, deadline)
	if err != nil {
		log.Printf("events %s/%s: %v", source, mode, err)
		if res.Note == "" {
			first, _, _ := strings.Cut(err.Error(), "\n")
			res.Note = first
		}
	}
	return []EventsResult{res}
}

func timing(mode string) string {
	if mode == "events" {
		return fmt.Sprintf("interval: %s, timeout: 500ms, fall: 1, rise: 1, watch: on", eventsSafety)
	}
	return fmt.Sprintf("interval: %s, timeout: 80ms, fall: 1, rise: 1, watch: off", eventsPolling)
}

// processLane: a daemon (sleep under a unique name) SIGKILLed, and started
// again with a new pid, as a supervisor would.
func processLane(_ string, mode string) (*lane, error) {
	name := fmt.Sprintf("hs-%d-bench-%s", os.Getpid(), mode)
	var d daemon
	start := func() error { return d.start(&exec.Cmd{Path: "/bin/sleep", Args: []string{name, "3600"}}) }
	return &lane{source: "process", mode: mode, fault: "SIGKILL of the daemon; restarted with a new pid",
		check: fmt.Sprintf("{name: daemon, process: {name: %s}, %s}", name, timing(mode)),
		setup: start, inject: d.kill, restore: start, close: func() { d.kill() }}, nil
}

// daemon is the process of a lane that the fault kills and the repair
// starts again, as a supervisor would.
type daemon struct {
	mu  sync.Mutex
	cmd *exec.Cmd
}

// start starts c as the daemon; it is reaped when it exits.
func (d *daemon) start(c *exec.Cmd) error {
	if err := c.Start(); err != nil {
		return err
	}
	go c.Wait()
	d.mu.Lock()
	d.cmd = c
	d.mu.Unlock()
	return nil
}

func (d *daemon) kill() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Kill()
}

// cgroupLane: every process of a cgroup v2 cgroup killed (cgroup.kill); a
// new one started in it.
func cgroupLane(_ string, mode string) (*lane, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("cgroup lane needs root")
	}
	root := ""
	for _, r := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(r, "cgroup.subtree_control")); err == nil {
			root = r
			break
		}
	}
	if root == "" {
		return nil, errors.New("no cgroup v2 hierarchy")
	}
	cg := filepath.Join(root, fmt.Sprintf("hs-%d-bench-%s", os.Getpid(), mode))
	start := func() error {
		c := exec.Command("/bin/sh", "-c", "echo $$ > "+filepath.Join(cg, "cgroup.procs")+" && exec sleep 3600")
		if err := c.Start(); err != nil {
			return err
		}
		go c.Wait()
		// Started once it is in: the shell writes itself in before exec.
		for range 1000 {
			if b, _ := os.ReadFile(filepath.Join(cg, "cgroup.events")); strings.HasPrefix(string(b), "populated 1") {
				return nil
			}
			time.Sleep(time.Millisecond)
		}
		return errors.New("cgroup not populated")
	}
	return &lane{source: "cgroup", mode: mode, fault: "every process of the cgroup killed (cgroup.kill); one started again",
		check: fmt.Sprintf("{name: pod, cgroup: {path: %s}, %s}", cg, timing(mode)),
		setup: func() error {
			if err := os.Mkdir(cg, 0o755); err != nil {
				return err
			}
			return start()
		},
		inject:  func() error { return os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0) },
		restore: start,
		close: func() {
			os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0)
			testutil.RemoveCgroup(cg, time.Second)
		}}, nil
}

// httpLane: an HTTP server process (this binary, see init) SIGKILLed, and
// started again on the same port.
func httpLane(_ string, mode string) (*lane, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := demo.FreePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var d daemon
	start := func() error {
		c := exec.Command(self)
		c.Env = append(os.Environ(), benchServerEnv+"="+addr)
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := d.start(c); err != nil {
			return err
		}
		for range 2000 {
			if resp, err := http.Get("http://" + addr + "/"); err == nil {
				resp.Body.Close()
				return nil
			}
			time.Sleep(time.Millisecond)
		}
		return errors.New("http server did not start")
	}
	return &lane{source: "http", mode: mode, fault: "SIGKILL of the HTTP server process; started again on the same port",
		check: fmt.Sprintf("{name: web, http: {url: 'http://%s/healthz'}, %s}", addr, timing(mode)),
		setup: start, inject: d.kill, restore: start, close: func() { d.kill() }}, nil
}

// pgMaker is the lane maker of pgLane with these arguments.
func pgMaker(source string, sig syscall.Signal, lockFile bool, host int) func(string, string) (*lane, error) {
	return func(_, mode string) (*lane, error) { return pgLane(source, mode, sig, lockFile, host) }
}

// pgLane: PostgreSQL's postmaster sent SIGQUIT (what pg_ctl stop -m
// immediate sends, without forking pg_ctl inside the measurement) or SIGINT
// (pg_ctl stop -m fast); started again with pg_ctl. With lockFile, the
// check has the server's data_dir and watches its postmaster.pid beside the
// parked connection. With host, the lane is laid out as two hosts
// (lane.host): the server's processes are moved to the cluster side's CPU
// each time it starts.
func pgLane(source, mode string, sig syscall.Signal, lockFile bool, host int) (*lane, error) {
	if testutil.PostgresBin() == "" {
		return nil, errors.New("no PostgreSQL server binaries")
	}
	// Its own folder outside the bench's (0700, root's): initdb runs as
	// the user postgres, which gets this one.
	pgdir, err := os.MkdirTemp("", "hs-pg-bench-")
	if err != nil {
		return nil, err
	}
	port, err := demo.FreePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	pg, err := testutil.NewPostgres(pgdir, port, 20)
	if err != nil {
		os.RemoveAll(pgdir)
		return nil, err
	}
	fault, stop := "postmaster SIGQUIT (= pg_ctl stop -m immediate); started again with pg_ctl", "immediate"
	if sig == syscall.SIGINT {
		fault, stop = "postmaster SIGINT (= pg_ctl stop -m fast); started again with pg_ctl", "fast"
	}
	spec := fmt.Sprintf("dsn: '%s'", pg.DSN)
	if lockFile {
		spec += ", data_dir: " + pg.DataDir()
		fault += "; the check watches postmaster.pid (data_dir)"
	}
	start := pg.Start
	if host != 0 {
		prio := fmt.Sprintf("realtime_priority %d", host)
		if host == hostNormal {
			prio = "normal priority"
		}
		fault += fmt.Sprintf("; as two hosts: PostgreSQL and the sidecar (%s) on CPU %d, coredns and the client on CPU %d", prio, clusterCPU, dnsCPU)
		start = func() error {
			if err := pg.Start(); err != nil {
				return err
			}
			pid, err := pg.PostmasterPID()
			if err != nil {
				return err
			}
			return pinTree(pid, clusterCPU)
		}
	}
	return &lane{source: source, mode: mode, fault: fault, host: host,
		check: fmt.Sprintf("{name: db, postgres: {%s}, %s}", spec, timing(mode)),
		setup: start,
		inject: func() error {
			pid, err := pg.PostmasterPID()
			if err != nil {
				return err
			}
			return syscall.Kill(pid, sig)
		},
		restore: func() error {
			pg.Stop(stop) // waits until the signal has taken it down; an error only says it is down already
			return start()
		},
		close: func() { pg.Stop("immediate"); os.RemoveAll(pgdir) }}, nil
}

// pinTree moves pid, then its children, to cpu: children it forks later
// inherit it from pid, those it forked before are found in /proc.
func pinTree(pid, cpu int) error {
	if _, err := pinProcess(pid, cpu); err != nil {
		return err
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		f, err := demo.StatFields(st) // state, ppid, …
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(filepath.Base(filepath.Dir(st)))
			if _, err := pinProcess(child, cpu); err != nil && !processGone(child) {
				return err
			}
		}
	}
	return nil
}

func processGone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err != nil
}

// nftLane: the ruleset of a network namespace of the lane's own flushed
// (nft flush ruleset); added back in one commit (nft -f -).
func nftLane(_, mode string) (*lane, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("nftables lane needs root")
	}
	for _, prog := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(prog); err != nil {
			return nil, fmt.Errorf("nftables lane needs %s", prog)
		}
	}
	ns := fmt.Sprintf("hs-%d-bench-nft-%s", os.Getpid(), mode)
	const ruleset = "table inet hs {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp dport 22 accept\n\t}\n}\n"
	nft := func(stdin string, args ...string) error {
		c := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
		c.Stdin = strings.NewReader(stdin)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("nft %v: %v: %s", args, err, out)
		}
		return nil
	}
	restore := func() error { return nft(ruleset, "-f", "-") }
	// The fault is the flush's commit, sent over netlink from here: forking
	// ip netns exec and nft (milliseconds to start) would be counted as time
	// to detect it.
	flush := func() error {
		f, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			return err
		}
		defer f.Close()
		conn, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
		if err != nil {
			return err
		}
		conn.FlushRuleset()
		return conn.Flush()
	}
	return &lane{source: "nftables", mode: mode, fault: "the lane's netns ruleset flushed in one netlink commit (what nft flush ruleset sends); the table, chain and rule added back in one commit (nft -f -)",
		check: fmt.Sprintf("{name: rules, nftables: {netns: %s, min_rules: 1}, %s}", ns, timing(mode)),
		setup: func() error {
			if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
				return fmt.Errorf("ip netns add: %v: %s", err, out)
			}
			return restore()
		},
		inject:  flush,
		restore: restore,
		close:   func() { exec.Command("ip", "netns", "del", ns).Run() }}, nil
}

// vmShared is the libvirtd both vm lanes use: a second libvirtd cannot run
// beside the first (its drivers lock pid files under /run/libvirt), so each
// lane has its own domain in this one's test driver.
var vmShared struct {
	sync.Mutex
	dir   string
	d     *testutil.Libvirtd
	held  *libvirt.Libvirt
	err   error
	users int
}

// vmDaemon starts the shared libvirtd on first use, and holds a connection
// to it: the test driver's state lasts while a connection is open, or each
// virsh would find a fresh driver (under polling nothing else holds one).
func vmDaemon() (*testutil.Libvirtd, error) {
	vmShared.Lock()
	defer vmShared.Unlock()
	if vmShared.d == nil && vmShared.err == nil {
		d, err := testutil.StartLibvirtdAt(vmShared.dir)
		if err == nil {
			held := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(d.Sock)))
			if err = held.ConnectToURI(libvirt.ConnectURI("test:///default")); err != nil {
				d.Kill()
			} else {
				vmShared.d, vmShared.held = d, held
			}
		}
		vmShared.err = err
	}
	return vmShared.d, vmShared.err
}

// vmRelease stops the shared libvirtd after its last lane.
func vmRelease() {
	vmShared.Lock()
	defer vmShared.Unlock()
	if vmShared.users--; vmShared.users > 0 {
		return
	}
	if vmShared.held != nil {
		vmShared.held.Disconnect()
	}
	if vmShared.d != nil {
		vmShared.d.Kill()
	}
	os.RemoveAll(vmShared.dir)
	vmShared.d, vmShared.held, vmShared.err, vmShared.dir = nil, nil, nil, ""
}

// vmLane: a domain of its own in the shared libvirtd's test driver
// destroyed (virsh destroy); started again (virsh start).
func vmLane(_, mode string) (*lane, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("vm lane needs root")
	}
	if err := testutil.LibvirtdMissing(); err != nil {
		return nil, fmt.Errorf("vm lane %s", err)
	}
	vmShared.Lock()
	if vmShared.dir == "" {
		// Outside the bench's folder: a unix socket path has at most 107 bytes.
		dir, err := os.MkdirTemp("", "hs-lv-bench-")
		if err != nil {
			vmShared.Unlock()
			return nil, err
		}
		vmShared.dir = dir
	}
	vmShared.users++
	dir := vmShared.dir
	vmShared.Unlock()
	uri := "test+unix:///default?socket=" + filepath.Join(dir, "libvirt-sock")
	dom := "bench-" + mode
	virsh := func(args ...string) error {
		if out, err := exec.Command("virsh", append([]string{"-c", uri}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("virsh %v: %v: %s", args, err, out)
		}
		return nil
	}
	// The fault is the destroy itself, over the bench's own libvirt
	// connection: forking virsh (tens of ms to start) would be counted as
	// time to detect it.
	domain := func(act func(*libvirt.Libvirt, libvirt.Domain) error) error {
		vmShared.Lock()
		held := vmShared.held
		vmShared.Unlock()
		d, err := held.DomainLookupByName(dom)
		if err != nil {
			return err
		}
		return act(held, d)
	}
	return &lane{source: "vm", mode: mode, fault: "the domain destroyed over libvirt's RPC (libvirt test driver, what virsh destroy sends); started again",
		check: fmt.Sprintf("{name: vms, vm: {uri: '%s', domains: [%s]}, %s}", uri, dom, timing(mode)),
		setup: func() error {
			if _, err := vmDaemon(); err != nil {
				return err
			}
			xml := filepath.Join(dir, dom+".xml")
			if err := os.WriteFile(xml, fmt.Appendf(nil, "<domain type='test'><name>%s</name><memory>8192</memory><os><type>hvm</type></os></domain>", dom), 0o600); err != nil {
				return err
			}
			if err := virsh("define", xml); err != nil {
				return err
			}
			return virsh("start", dom)
		},
		inject:  func() error { return domain((*libvirt.Libvirt).DomainDestroy) },
		restore: func() error { return domain((*libvirt.Libvirt).DomainCreate) },
		close:   vmRelease}, nil
}

// criLane: container web of a CRI runtime test double (internal/cridouble,
// the real RuntimeService protocol on a unix socket) set EXITED with a
// CONTAINER_STOPPED event; RUNNING again with CONTAINER_STARTED.
func criLane(_, mode string) (*lane, error) {
	dir, err := os.MkdirTemp("", "hs-cri-bench-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "cri.sock")
	var d *cridouble.Runtime
	set := func(state runtimeapi.ContainerState, typ runtimeapi.ContainerEventType) error {
		d.Set("c1", "web", state, typ, time.Now().UnixNano())
		return nil
	}
	return &lane{source: "pods", mode: mode, fault: "container web EXITED with a CONTAINER_STOPPED event (CRI test double); RUNNING with CONTAINER_STARTED",
		check: fmt.Sprintf("{name: pods, pods: {socket: %s, containers: [web]}, %s}", sock, timing(mode)),
		setup: func() error {
			var err error
			if d, err = cridouble.Start(sock); err != nil {
				return err
			}
			return set(cridouble.Running, cridouble.Started)
		},
		inject:  func() error { return set(cridouble.Exited, cridouble.Stopped) },
		restore: func() error { return set(cridouble.Running, cridouble.Started) },
		close: func() {
			if d != nil {
				d.Close()
			}
			os.RemoveAll(dir)
		}}, nil
}

// eventsRun injects l's faults against a DNS server and sidecar of its
// own: l is cluster laneClust(0), sharing its name with an always-up spare.
func (b *bencher) eventsRun(ctx context.Context, dir string, l *lane, deadline time.Time) (EventsResult, error) {
	dnsPort, _ := demo.FreePort("127.0.0.1")
	apiPort, _ := demo.FreePort("127.0.0.1")
	cluster := demo.ClusterSpec{Name: laneClust(0), IPs: []string{laneIP(0)}, Checks: []string{l.check}}
	l.res = EventsResult{Source: l.source, Mode: l.mode, Fault: l.fault}
	if l.host > 0 {
		prefix, remove, err := testutil.RealtimeCgroup(fmt.Sprintf("hs-%d-bench-rt", os.Getpid()), 100000)
		if err != nil {
			return l.result(), err
		}
		defer remove() // after the stack has stopped
		cluster.SidecarTop = []string{fmt.Sprintf("realtime_priority: %d", l.host)}
		cluster.SidecarPrefix = prefix
	}
	opt := demo.Options{Dir: dir, CoreDNS: b.coredns, Sidecar: b.sidecar,
		DNS: fmt.Sprintf("127.0.0.1:%d", dnsPort), API: fmt.Sprintf("127.0.0.1:%d", apiPort),
		Zones:    []string{"bench.test"},
		Clusters: []demo.ClusterSpec{cluster, {Name: "spare", IPs: []string{spareIP()}}},
		Apps:     []string{fmt.Sprintf("%s %s spare", laneName(0), laneClust(0))}}
	st, err := demo.NewStack(opt)
	if err != nil {
		return l.result(), err
	}
	if err := st.Start(ctx); err != nil {
		return l.result(), err
	}
	defer st.Stop()
	if l.host != 0 {
		if err := l.twoHosts(st); err != nil {
			return l.result(), err
		}
		restore, err := pinProcess(os.Getpid(), dnsCPU)
		if err != nil {
			return l.result(), err
		}
		defer restore()
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = st.WaitStates(wctx, "up", laneClust(0))
	cancel()
	if err != nil {
		return l.result(), err
	}
	l.faults(opt.DNS, deadline)
	if evs, err := demo.Events(opt.API); err == nil {
		l.detected(laneClust(0), evs)
	}
	return l.result(), nil
}

// twoHosts moves coredns to the DNS side's CPU and the sidecar to the
// cluster side's, and checks that the sidecar runs at real-time priority:
// a lane that measured a sidecar at the normal priority says so.
func (l *lane) twoHosts(st *demo.Stack) error {
	if _, err := pinProcess(st.CoreDNS().Pid(), dnsCPU); err != nil {
		return err
	}
	if _, err := pinProcess(st.Sidecar(laneClust(0)).Pid(), clusterCPU); err != nil {
		return err
	}
	if l.host == hostNormal {
		return nil
	}
	logName := "sidecar-" + laneClust(0)
	for range 1000 {
		tail := st.LogTail(logName, 20)
		if strings.Contains(tail, "running at real-time priority") {
			return nil
		}
		if strings.Contains(tail, "running at the normal priority") {
			l.res.Note = "the sidecar ran at the normal priority (see its log)"
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("the sidecar's log does not say its priority:\n%s", st.LogTail(logName, 20))
}

// result is the lane's figures from its samples.
func (l *lane) result() EventsResult {
	l.res.Faults = len(l.res.raw)
	l.res.Client = dist(l.res.raw)
	l.res.Detected = dist(l.res.detRaw)
	if len(l.res.raw) > 0 {
		s := append([]float64(nil), l.res.raw...)
		sort.Float64s(s)
		l.res.P95 = quantile(s, 0.95)
	}
	return l.res
}

// faults injects eventsFaults faults one after the other, each at a random
// phase, and measures each to the first DNS answer without the cluster.
func (l *lane) faults(dnsAddr string, deadline time.Time) {
	r := demo.NewResolver(dnsAddr)
	both := spareIP() + " " + laneIP(0)
	if laneIP(0) < spareIP() {
		both = laneIP(0) + " " + spareIP()
	}
	worst := 3 * time.Second
	// What earlier sections left on this process's heap is collected now,
	// not by a collector cycle (a core's worth of marking) while a fault is
	// timed.
	runtime.GC()
	debug.FreeOSMemory()
	for range eventsFaults {
		time.Sleep(rand.N(eventsPolling) + 20*time.Millisecond) // a random phase against the poll timer
		if time.Until(deadline) < worst {
			l.res.Note = "time-bound"
			return
		}
		// The DNS answer is polled from the moment the fault starts, beside
		// the call that makes it: some return only well after their effect
		// (an nftables commit that deletes a base chain is acknowledged
		// after an RCU grace period, ~5–15 ms after the change is live and
		// announced).
		t0 := time.Now()
		l.res.injected = append(l.res.injected, t0)
		injected := make(chan error, 1)
		go func() { injected <- l.inject() }()
		seen := waitAnswer(r, laneName(0), spareIP(), eventsPollDNS, t0.Add(worst))
		took := time.Since(t0)
		if err := <-injected; err != nil {
			l.res.Note = "inject: " + err.Error()
			return
		}
		if os.Getenv("HS_BENCH_DEBUG") != "" {
			log.Printf("%s/%s: answer %.1f ms", l.source, l.mode, ms(took))
		}
		if seen {
			l.res.raw = append(l.res.raw, ms(took))
		} else {
			l.res.Timeouts++
		}
		if err := l.restore(); err != nil {
			l.res.Note = "restore: " + err.Error()
			return
		}
		if !waitAnswer(r, laneName(0), both, 5*time.Millisecond, time.Now().Add(5*time.Second)) {
			l.res.Note = "did not come back within 5 s"
			return
		}
	}
}

func eventsMarkdown(b *strings.Builder, rs []EventsResult) {
	if len(rs) == 0 {
		return
	}
	b.WriteString("## Event-driven checks: fault → changed DNS answer per event source\n\n")
	fmt.Fprintf(b, "The real bin/coredns and one bin/healthswitch-sidecar per lane; the DNS answer polled every %s over raw UDP (miekg/dns). Each fault at a random phase; *events* is the check with its event source on (`watch: on`) and a %s safety poll, *polling* the same check with `watch: off` every %s, both in the same run, one lane at a time (a source's two modes one after the other), each on a DNS server of its own with nothing of the other lanes running: a lane's repair (a PostgreSQL crash recovery) or a polled sidecar would load the machine while a fault is timed in milliseconds. fall 1, rise 1 everywhere (rise only affects recovery). *Detected* is to the start of the sidecar's failing run (`observed_at` of the DNS server's transition): a run that then waits on the server (the postgres check's query on a fast shutdown) counts its wait after it. The *-host* lanes lay the machine out as two hosts (taskset): the cluster side (PostgreSQL, its sidecar) on CPU %d, the DNS side (coredns, this client) on CPU %d; their sidecar runs at `realtime_priority: %d` (SCHED_FIFO, in a cgroup with a real-time budget where cgroup v1 asks for one), except in *-host-normal*. The other lanes share both CPUs among all. Goal: p99 ≤ 10 ms.\n\n", eventsPollDNS, eventsSafety, eventsPolling, clusterCPU, dnsCPU, hostRealtime)
	b.WriteString("| source | mode | faults | p50 | p95 | p99 | max | p50 vs polling | p99 vs polling | detected p50 / p99 | fault |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	base := map[string]EventsResult{}
	for _, r := range rs {
		if r.Mode == "polling" {
			base[r.Source] = r
		}
	}
	for _, r := range rs {
		p := base[r.Source]
		note := r.Fault
		if r.Timeouts > 0 {
			note += fmt.Sprintf("; %d not seen within 3 s", r.Timeouts)
		}
		if r.Note != "" && note != "" {
			note += "; "
		}
		note += r.Note
		if r.Faults == 0 {
			fmt.Fprintf(b, "| %s | %s | 0 | - | - | - | - | - | - | - | %s |\n", r.Source, r.Mode, note)
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %d | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %s | %s | %.1f / %.1f ms | %s |\n", r.Source, r.Mode, r.Faults,
			r.Client.P50, r.P95, r.Client.P99, r.Client.Max, ratio(r.Client.P50, p.Client.P50), ratio(r.Client.P99, p.Client.P99),
			r.Detected.P50, r.Detected.P99, note)
	}
	b.WriteString("\n")
}

// detected matches each injection with the first down transition of the
// lane's cluster after it, for the sidecar's observed_at.
func (l *lane) detected(cluster string, evs []demo.Event) {
	for _, t0 := range l.res.injected {
		var best *demo.Event
		for i, e := range evs {
			if e.Cluster == cluster && e.To == "down" && !e.AppliedAt.Before(t0) && (best == nil || e.AppliedAt.Before(best.AppliedAt)) {
				best = &evs[i]
			}
		}
		if best != nil && os.Getenv("HS_BENCH_DEBUG") != "" {
			log.Printf("%s/%s: observed %.1f received %.1f applied %.1f ms (%s)", l.source, l.mode, ms(best.ObservedAt.Sub(t0)), ms(best.ReceivedAt.Sub(t0)), ms(best.AppliedAt.Sub(t0)), best.Reason)
		}
		if best != nil && !best.ObservedAt.IsZero() {
			l.res.detRaw = append(l.res.detRaw, ms(best.ObservedAt.Sub(t0)))
		}
	}
}
