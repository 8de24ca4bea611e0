package testutil

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDB is a throwaway MariaDB server from the machine's own binaries
// (Debian mariadb-server), on 127.0.0.1 at a free port, with its data in a
// temp dir. Stop kills it at once (a dead database); Start brings it back on
// the same port and data.
//
// It has two accounts besides root: "probe" (what a health check logs in
// as; no SUPER, so it cannot use the slot reserved for administrators) and
// "app" (an application, all privileges but SUPER and CONNECTION ADMIN),
// both with the password MariaDBPassword.
type MariaDB struct {
	*proc
	Port   int
	Socket string // root logs in here (socket logins are always 'localhost')
}

// MariaDBPassword is the password of the "probe" and "app" accounts.
const MariaDBPassword = "s3cret-pw"

// StartMariaDB initialises a data dir and starts the server with
// max_connections set to maxConns (MariaDB's minimum is 10) and extra
// options (e.g. "--ssl-cert=FILE").
func StartMariaDB(t testing.TB, maxConns int, extra ...string) *MariaDB {
	t.Helper()
	Need(t, "mariadb-install-db", "mariadbd")
	dir, err := os.MkdirTemp("", "hs-maria-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "mariadb-install-db", "--no-defaults", "--datadir="+data,
		"--user="+currentUser(), "--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	m := &MariaDB{Port: FreePort(t), Socket: filepath.Join(dir, "sock")}
	m.proc = &proc{t: t, log: filepath.Join(dir, "error.log"), within: time.Minute,
		argv: []string{"mariadbd", "--no-defaults", "--datadir=" + data, "--socket=" + m.Socket,
			fmt.Sprintf("--port=%d", m.Port), "--bind-address=127.0.0.1", "--user=" + currentUser(),
			fmt.Sprintf("--max-connections=%d", maxConns), "--skip-name-resolve", "--skip-log-bin",
			"--pid-file=" + filepath.Join(dir, "pid"), "--log-error=" + filepath.Join(dir, "error.log"),
			"--innodb-buffer-pool-size=16M", "--innodb-flush-log-at-trx-commit=0", "--skip-innodb-doublewrite"},
		ready: func() error {
			db := m.rootDB()
			defer db.Close()
			return db.Ping()
		}}
	m.argv = append(m.argv, extra...)
	t.Cleanup(m.Stop)
	m.Start()
	m.Root(t, "CREATE USER probe@'%' IDENTIFIED BY '"+MariaDBPassword+"'",
		"CREATE USER app@'%' IDENTIFIED BY '"+MariaDBPassword+"'",
		"GRANT ALL ON *.* TO app@'%'", "REVOKE SUPER, CONNECTION ADMIN ON *.* FROM app@'%'")
	return m
}

// DSN is the go-sql-driver DSN of user over TCP.
func (m *MariaDB) DSN(user string) string {
	return fmt.Sprintf("%s:%s@tcp(127.0.0.1:%d)/", user, MariaDBPassword, m.Port)
}

func (m *MariaDB) rootDB() *sql.DB {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", m.Socket
	cfg.Logger = &mysql.NopLogger{}
	c, _ := mysql.NewConnector(cfg)
	return sql.OpenDB(c)
}

// Root runs statements as root over the socket.
func (m *MariaDB) Root(t testing.TB, stmts ...string) {
	t.Helper()
	db := m.rootDB()
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// currentUser is who mariadbd runs as: as root it must be told so.
func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

// QueryInt runs a query returning one integer as root over the socket.
func (m *MariaDB) QueryInt(t testing.TB, query string) int {
	t.Helper()
	db := m.rootDB()
	defer db.Close()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
