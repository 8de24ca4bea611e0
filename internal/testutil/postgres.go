package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/demo"
)

// StartPostgres starts a throwaway PostgreSQL server from the machine's own
// server binaries (/usr/lib/postgresql/*/bin, or $PG_BIN), listening on
// 127.0.0.1 at a free port with max_connections set to maxConns and trust
// authentication for the user "probe". stop shuts it down at once (tests use
// it to simulate a dead database); it is also called at cleanup.
//
// initdb refuses to run as root, so as root the server runs as the system
// user "postgres" in a directory it owns.
func StartPostgres(t testing.TB, maxConns int) (dsn string, stop func()) {
	t.Helper()
	pg := StartPostgresServer(t, maxConns)
	return pg.DSN, func() {
		if err := pg.Stop("immediate"); err != nil {
			t.Error(err)
		}
	}
}

// StartPostgresServer is StartPostgres for tests that stop the server in a
// chosen way and start it again. It is stopped at cleanup.
func StartPostgresServer(t testing.TB, maxConns int) *Postgres {
	t.Helper()
	if PostgresBin() == "" {
		Missing(t, "needs the PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or $PG_BIN")
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			Missing(t, "needs the system user postgres to run PostgreSQL as root: "+err.Error())
		}
	}
	dir, err := os.MkdirTemp("", "hs-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pg, err := NewPostgres(dir, FreePort(t), maxConns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop("immediate") })
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	return pg
}

// Postgres is a throwaway PostgreSQL server in a directory of its own.
// The bench driver uses it too, hence errors rather than a testing.TB.
type Postgres struct {
	DSN string

	bin, data, dir, opts string
	asUser               []string
	uid, gid             int

	mu      sync.Mutex
	running bool
}

// NewPostgres runs initdb in dir (as the user postgres when root; dir is
// handed to it) for a server on 127.0.0.1:port; Start starts it.
func NewPostgres(dir string, port, maxConns int) (*Postgres, error) {
	pg := &Postgres{bin: PostgresBin(), dir: dir, data: filepath.Join(dir, "data"),
		DSN:  fmt.Sprintf("postgres://probe@127.0.0.1:%d/postgres?sslmode=disable", port),
		opts: fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=%d -c fsync=off -c full_page_writes=off", port, dir, maxConns)}
	if pg.bin == "" {
		return nil, errors.New("no PostgreSQL server binaries")
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, err
		}
		pg.uid, _ = strconv.Atoi(u.Uid)
		pg.gid, _ = strconv.Atoi(u.Gid)
		if err := os.Chown(dir, pg.uid, pg.gid); err != nil {
			return nil, err
		}
		pg.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	return pg, pg.run("initdb", "-D", pg.data, "-A", "trust", "-U", "probe", "--no-sync")
}

func (pg *Postgres) run(prog string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append(append(append([]string{}, pg.asUser...), filepath.Join(pg.bin, prog)), args...)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %w\n%s", argv, err, out)
	}
	return nil
}

// StartPostgresStandby starts a hot standby of primary (pg_basebackup -R):
// read-only, it refuses LISTEN among others. It is stopped at cleanup.
func StartPostgresStandby(t testing.TB, primary *Postgres) *Postgres {
	t.Helper()
	dir, err := os.MkdirTemp("", "hs-pg-standby-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := FreePort(t)
	sb := &Postgres{bin: primary.bin, dir: dir, data: filepath.Join(dir, "data"), asUser: primary.asUser,
		DSN:  fmt.Sprintf("postgres://probe@127.0.0.1:%d/postgres?sslmode=disable", port),
		opts: strings.Replace(primary.opts, "-p "+primary.port(), "-p "+strconv.Itoa(port), 1)}
	sb.opts = strings.Replace(sb.opts, "-k "+primary.dir, "-k "+dir, 1)
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, primary.uid, primary.gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := sb.run("pg_basebackup", "-d", primary.DSN, "-D", sb.data, "-R", "-c", "fast", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Stop("immediate") })
	if err := sb.Start(); err != nil {
		t.Fatal(err)
	}
	return sb
}

// DataDir is the server's data directory.
func (pg *Postgres) DataDir() string { return pg.data }

// LogFile is where the server logs (pg_ctl -l).
func (pg *Postgres) LogFile() string { return filepath.Join(pg.dir, "log") }

func (pg *Postgres) port() string {
	port, _, _ := strings.Cut(strings.TrimPrefix(pg.DSN, "postgres://probe@127.0.0.1:"), "/")
	return port
}

// Start starts the server and waits until it accepts connections.
func (pg *Postgres) Start() error {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.running {
		return nil
	}
	if err := pg.run("pg_ctl", "-D", pg.data, "-l", pg.LogFile(), "-w", "-t", "60", "-o", pg.opts, "start"); err != nil {
		return err
	}
	pg.running = true
	return nil
}

// Stop stops the server with pg_ctl's shutdown mode (smart, fast,
// immediate) and waits until it is down; stopping a stopped server does
// nothing.
func (pg *Postgres) Stop(mode string) error {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if !pg.running {
		return nil
	}
	pg.running = false
	return pg.run("pg_ctl", "-D", pg.data, "-m", mode, "-w", "stop")
}

// PostmasterPID is the pid of the running server's postmaster (the first
// line of postmaster.pid): signalling it stops the server without the
// delay of forking pg_ctl (SIGQUIT is what pg_ctl stop -m immediate sends).
func (pg *Postgres) PostmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(pg.data, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

// PostgresBin is the folder of the newest PostgreSQL server binaries
// installed, "" when there are none.
func PostgresBin() string {
	if b := os.Getenv("PG_BIN"); b != "" {
		return b
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	// Highest major version wins; "9.6" < "15" needs a numeric sort.
	sort.Slice(found, func(i, j int) bool { return pgMajor(found[i]) < pgMajor(found[j]) })
	if len(found) == 0 {
		return ""
	}
	return filepath.Dir(found[len(found)-1])
}

func pgMajor(p string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
	return v
}

// FreePort returns a port on 127.0.0.1, free for TCP and UDP a moment ago,
// for a server a test starts: demo.FreePort, drawn below the kernel's
// ephemeral range so that no outgoing connection takes it meanwhile.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := demo.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
