package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
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
	bin := postgresBin()
	if bin == "" {
		Missing(t, "needs the PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or $PG_BIN")
	}
	var asUser []string
	dir, err := os.MkdirTemp("", "hs-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			Missing(t, "needs the system user postgres to run PostgreSQL as root: "+err.Error())
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	run := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		argv := append(append([]string{}, asUser...), args...)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	port := FreePort(t)
	data := filepath.Join(dir, "data")
	run(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "probe", "--no-sync")
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=%d -c fsync=off -c full_page_writes=off", port, dir, maxConns)
	run(filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts, "start")

	var once sync.Once
	stop = func() {
		once.Do(func() { run(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop") })
	}
	t.Cleanup(stop)
	return fmt.Sprintf("postgres://probe@127.0.0.1:%d/postgres?sslmode=disable", port), stop
}

func postgresBin() string {
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

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
