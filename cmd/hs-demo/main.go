// Command hs-demo runs healthswitch on loopback: a DNS server, two simulated
// clusters (east on 127.0.0.11, west on 127.0.0.12), each an application
// server with its own sidecar.
//
//	hs-demo run              start everything, print a line per state change (make demo)
//	hs-demo fail CLUSTER     make a running demo's CLUSTER fail (make demo-fail CLUSTER=east)
//	hs-demo heal CLUSTER     heal it again (make demo-heal CLUSTER=east)
//	hs-demo failover         scripted failure and recovery with a timeline (make demo-failover)
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/healthswitch/healthswitch/internal/demo"
)

// demoDir is fixed so `make demo-fail` in another terminal finds the demo.
const demoDir = "/tmp/healthswitch-demo"

var clusters = []struct{ name, ip string }{{"east", "127.0.0.11"}, {"west", "127.0.0.12"}}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("hs-demo", flag.ContinueOnError)
	binDir := fs.String("bin", "bin", "folder holding coredns and healthswitch-sidecar")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: hs-demo [-bin DIR] run | failover | fail CLUSTER | heal CLUSTER")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var err error
	switch cmd := fs.Arg(0); cmd {
	case "run":
		err = runDemo(*binDir)
	case "failover":
		err = runFailover(*binDir)
	case "fail", "heal":
		if fs.NArg() != 2 {
			fs.Usage()
			return 2
		}
		err = control(fs.Arg(1), cmd == "fail")
	default:
		fs.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hs-demo:", err)
		return 1
	}
	return 0
}

func binaries(binDir string) (coredns, sidecar string, err error) {
	coredns, sidecar = filepath.Join(binDir, "coredns"), filepath.Join(binDir, "healthswitch-sidecar")
	for _, p := range []string{coredns, sidecar} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("%s is missing: run make build", p)
		}
	}
	return coredns, sidecar, nil
}

// setup starts the two apps and the stack. dir holds everything; dnsAddr,
// apiAddr and appPort are fixed for the interactive demo and free ports
// for the scripted one.
func setup(ctx context.Context, binDir, dir, dnsAddr, apiAddr string, appPort, sidecarPort int) (*demo.Stack, map[string]*demo.App, error) {
	coredns, sidecar, err := binaries(binDir)
	if err != nil {
		return nil, nil, err
	}
	apps := map[string]*demo.App{}
	opt := demo.Options{Dir: dir, CoreDNS: coredns, Sidecar: sidecar, DNS: dnsAddr, API: apiAddr,
		Zones: []string{"svc1.net", "svc2.net"}, Interval: 100 * time.Millisecond}
	for _, c := range clusters {
		app, err := demo.StartApp(c.name, fmt.Sprintf("%s:%d", c.ip, appPort))
		if err != nil {
			closeApps(apps)
			return nil, nil, err
		}
		app.FailFile = filepath.Join(dir, c.name+".fail")
		apps[c.name] = app
		sp := sidecarPort
		if sp == 0 {
			if sp, err = demo.FreePort(c.ip); err != nil {
				closeApps(apps)
				return nil, nil, err
			}
		}
		opt.Clusters = append(opt.Clusters, demo.ClusterSpec{Name: c.name, IPs: []string{c.ip},
			Health: app.HealthURL(), SidecarListen: fmt.Sprintf("%s:%d", c.ip, sp)})
	}
	st, err := demo.NewStack(opt)
	if err == nil {
		err = st.Start(ctx)
	}
	if err != nil {
		closeApps(apps)
		return nil, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := st.WaitStates(wctx, "up", "east", "west"); err != nil {
		st.Stop()
		closeApps(apps)
		return nil, nil, fmt.Errorf("clusters did not come up: %w\n%s", err, st.LogTail("sidecar-east", 10))
	}
	return st, apps, nil
}

func closeApps(apps map[string]*demo.App) {
	for _, a := range apps {
		a.Close()
	}
}

func runDemo(binDir string) error {
	if pid := runningDemo(); pid != 0 {
		return fmt.Errorf("a demo is already running (pid %d); stop it with Ctrl-C in its terminal", pid)
	}
	if err := os.MkdirAll(demoDir, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(demoDir, "*"))
	for _, f := range old {
		os.Remove(f)
	}
	pidFile := filepath.Join(demoDir, "demo.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	const dnsAddr, apiAddr = "127.0.0.1:1053", "127.0.0.1:8053"
	fmt.Println("starting healthswitch demo on loopback (files in " + demoDir + ") ...")
	st, apps, err := setup(ctx, binDir, demoDir, dnsAddr, apiAddr, 8080, 9100)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\nstopping ...")
		st.Stop()
		closeApps(apps)
		fmt.Println("stopped: DNS server, sidecars and apps are gone.")
	}()

	printBanner(st, apps)
	keys := make(chan string)
	if isTerminal(os.Stdin) {
		go readKeys(os.Stdin, keys)
	}
	return watch(ctx, st, apps, keys)
}

func printBanner(st *demo.Stack, apps map[string]*demo.App) {
	cd := st.CoreDNS()
	fmt.Printf("\n  DNS server   bin/coredns (pid %d) answering svc1.net and svc2.net on %s\n", cd.Pid(), st.Opt.DNS)
	fmt.Printf("               push API http://%s (/v1/status, /v1/events); Corefile %s\n", st.Opt.API, st.Corefile)
	fmt.Printf("  status page  http://%s/  (open it in a browser: clusters, answers and transitions, live)\n", st.Opt.API)
	for _, c := range clusters {
		fmt.Printf("  cluster %-4s app %s/healthz, sidecar (pid %d) checks it every 100ms; config %s\n",
			c.name, apps[c.name].URL, st.Sidecar(c.name).Pid(), st.SidecarConfig(c.name))
	}
	fmt.Printf("\n  try:          dig @127.0.0.1 -p 1053 svc1.net +short\n")
	fmt.Printf("                curl -s http://%s/v1/status\n", st.Opt.API)
	fmt.Printf("  break / heal: make demo-fail CLUSTER=east    make demo-heal CLUSTER=east\n")
	if isTerminal(os.Stdin) {
		fmt.Printf("                or type fe / he / fw / hw and Enter (f=fail, h=heal, e=east, w=west), q to quit\n")
	}
	fmt.Printf("  stop:         Ctrl-C (stops everything)\n\n")
}

// watch prints a line per state change until ctx ends or a child dies.
func watch(ctx context.Context, st *demo.Stack, apps map[string]*demo.App, keys <-chan string) error {
	w := &demo.EventWatcher{API: st.Opt.API}
	r := demo.NewResolver(st.Opt.DNS)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case k := <-keys:
			if k == "q" {
				return nil
			}
			handleKey(k, apps)
		case <-tick.C:
			for _, p := range st.Procs() {
				if p.Exited() {
					return fmt.Errorf("%s exited unexpectedly; see %s", p.Name, demoDir)
				}
			}
			evs, err := w.Poll()
			if err != nil {
				continue
			}
			for _, e := range evs {
				printEvent(e, r)
			}
			if first {
				fmt.Printf("%s svc1.net answers %s\n", stamp(time.Now()), r.Answer("svc1.net"))
				first = false
			}
		}
	}
}

func printEvent(e demo.Event, r *demo.Resolver) {
	fmt.Printf("%s %s %s (%s) → svc1.net now answers %s\n", stamp(e.AppliedAt), e.Cluster, e.To, e.Reason, orNone(r.Answer("svc1.net")))
}

func stamp(t time.Time) string { return t.Local().Format("15:04:05.000") }

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

func handleKey(k string, apps map[string]*demo.App) {
	k = strings.ToLower(strings.Join(strings.Fields(k), ""))
	if len(k) < 2 || (k[0] != 'f' && k[0] != 'h') {
		fmt.Println("  (type fe, he, fw or hw and Enter; q to quit)")
		return
	}
	var name string
	for _, c := range clusters {
		if strings.HasPrefix(c.name, k[1:]) {
			name = c.name
		}
	}
	app, ok := apps[name]
	if !ok {
		fmt.Println("  (clusters: east, west)")
		return
	}
	fail := k[0] == 'f'
	app.SetFailing(fail)
	if !fail {
		os.Remove(app.FailFile)
	}
	fmt.Printf("%s %s\n", stamp(time.Now()), injectNote(name, fail))
}

func injectNote(cluster string, fail bool) string {
	if fail {
		return cluster + ": fault injected (its app now answers HTTP 500)"
	}
	return cluster + ": fault removed (its app answers 200 again)"
}

func readKeys(in io.Reader, keys chan<- string) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		keys <- sc.Text()
	}
}

// isTerminal asks the tty driver, so /dev/null (also a character device)
// does not count.
func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

// runningDemo is the pid of a live demo, 0 when none runs.
func runningDemo() int {
	b, err := os.ReadFile(filepath.Join(demoDir, "demo.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0
	}
	return pid
}

// control breaks or heals a cluster of a running demo through its fault
// file, which the cluster's app looks at on every request.
func control(cluster string, fail bool) error {
	known := false
	for _, c := range clusters {
		known = known || c.name == cluster
	}
	if !known {
		return fmt.Errorf("unknown cluster %q: use east or west (CLUSTER=east)", cluster)
	}
	if runningDemo() == 0 {
		return errors.New("no demo is running: start one with make demo")
	}
	flag := filepath.Join(demoDir, cluster+".fail")
	if fail {
		if err := os.WriteFile(flag, []byte("injected by hs-demo fail\n"), 0o644); err != nil {
			return err
		}
	} else if err := os.Remove(flag); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Println(injectNote(cluster, fail) + "; watch the demo's terminal")
	return nil
}

// runFailover breaks east, waits for the switch, heals it, waits for the
// switch back, and prints both timelines.
func runFailover(binDir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "healthswitch-failover")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dnsPort, err := demo.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	apiPort, err := demo.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	dnsAddr, apiAddr := fmt.Sprintf("127.0.0.1:%d", dnsPort), fmt.Sprintf("127.0.0.1:%d", apiPort)
	st, apps, err := setup(ctx, binDir, dir, dnsAddr, apiAddr, 0, 0)
	if err != nil {
		return err
	}
	defer func() {
		st.Stop()
		closeApps(apps)
	}()
	r := demo.NewResolver(dnsAddr)
	fmt.Printf("DNS server on %s, east app %s, west app %s; sidecars check every 100ms (fall 1, rise 2)\n",
		dnsAddr, apps["east"].URL, apps["west"].URL)
	fmt.Printf("before: svc1.net answers %s\n\n", r.Answer("svc1.net"))

	down, err := demo.Switch(ctx, apiAddr, r, "svc1.net", "east", "down",
		func() { apps["east"].SetFailing(true) },
		func(a string) bool { return a == "127.0.0.12" })
	down.Title = "failure: east's app starts answering HTTP 500"
	if err != nil {
		return err
	}
	down.Print(os.Stdout, "svc1.net")

	// Let the failure settle before the repair, as a real outage would.
	time.Sleep(300 * time.Millisecond)
	up, err := demo.Switch(ctx, apiAddr, r, "svc1.net", "east", "up",
		func() { apps["east"].SetFailing(false) },
		func(a string) bool { return a == "127.0.0.11 127.0.0.12" })
	up.Title, up.Action = "\nrecovery: east's app answers 200 again (the sidecar needs 2 good checks: rise 2)", "fault removed"
	if err != nil {
		return err
	}
	up.Print(os.Stdout, "svc1.net")
	fmt.Printf("\nafter: svc1.net answers %s; stopping everything.\n", r.Answer("svc1.net"))
	return nil
}
