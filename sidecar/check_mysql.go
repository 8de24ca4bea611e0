package sidecar

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQLSpec checks that a MySQL or MariaDB server answers and that
// applications still have connections left: "Too many connections" is a
// fault before applications meet it.
type MySQLSpec struct {
	DSN                string  `yaml:"dsn"`                  // go-sql-driver DSN: user:password@tcp(host:3306)/
	MaxConnectionsUsed float64 `yaml:"max_connections_used"` // 0 < ratio <= 1, default 0.9
	CAFile             string  `yaml:"ca_file"`              // PEM roots to verify the server's TLS with (implies TLS)

	cfg  *mysql.Config
	once sync.Once
	db   *sql.DB // at most one connection, kept between runs
}

func (s *MySQLSpec) compile(c *Check) (err error) {
	if s.DSN == "" {
		return errors.New("dsn: required (user:password@tcp(host:3306)/)")
	}
	if s.cfg, err = mysql.ParseDSN(s.DSN); err != nil {
		return fmt.Errorf("dsn: %w", s.redact(err))
	}
	if s.cfg.Timeout == 0 {
		s.cfg.Timeout = c.timeout // the dial; queries run under the run's context
	}
	s.cfg.Logger = &mysql.NopLogger{} // broken connections are reported as results, not logged
	if s.CAFile != "" {
		roots, err := loadRoots(s.CAFile)
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(s.cfg.Addr)
		s.cfg.TLS = &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return validShare("max_connections_used", &s.MaxConnectionsUsed, DefaultMaxConnectionsUsed)
}

func (s *MySQLSpec) redact(err error) error {
	if s.cfg != nil {
		return redactErr(err, s.cfg.Passwd)
	}
	// A DSN that does not parse: its password is what lies between the
	// first ':' and the last '@' ([user[:password]@][net[(addr)]]/db).
	user, _, ok := strings.Cut(s.DSN[:max(strings.LastIndex(s.DSN, "@"), 0)], ":")
	if !ok {
		return err
	}
	return redactErr(err, s.DSN[len(user)+1:strings.LastIndex(s.DSN, "@")])
}

// open returns the check's pool of one connection. database/sql replaces a
// connection that broke (a server restart) on the next query by itself.
func (s *MySQLSpec) open() *sql.DB {
	s.once.Do(func() {
		conn, _ := mysql.NewConnector(s.cfg) // cannot fail: cfg came from ParseDSN
		s.db = sql.OpenDB(conn)
		s.db.SetMaxOpenConns(1)
		s.db.SetMaxIdleConns(1)
	})
	return s.db
}

func probeMySQL(ctx context.Context, c *Check) Result {
	s := c.MySQL
	used, limit, err := mysqlConnections(ctx, s.open())
	if err != nil {
		return fail(fmt.Errorf("mysql %s: %w", s.cfg.Addr, s.redact(err)))
	}
	return s.judge(used, limit)
}

// judge compares the connections in use with what applications may open.
// Threads_connected counts every client, this check's own connection too;
// applications are refused at max_connections (the one slot above it is kept
// for administrators, SUPER / CONNECTION ADMIN, and is not theirs).
func (s *MySQLSpec) judge(used, limit int) Result {
	ratio := float64(used) / float64(limit)
	switch {
	case used >= limit:
		return fail(fmt.Errorf("mysql %s: %d of %d connections in use: none left for applications", s.cfg.Addr, used, limit))
	case ratio > s.MaxConnectionsUsed:
		return fail(fmt.Errorf("mysql %s: %d of %d connections in use (%.0f%% > %.0f%%)", s.cfg.Addr, used, limit, 100*ratio, 100*s.MaxConnectionsUsed))
	}
	return pass("%d of %d connections in use", used, limit)
}

// mysqlConnections reads Threads_connected and max_connections; SHOW GLOBAL
// STATUS needs no privilege and reads the same on MySQL 5.7, 8 and MariaDB.
func mysqlConnections(ctx context.Context, db *sql.DB) (used, limit int, err error) {
	var name, value string
	if err = db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Threads_connected'").Scan(&name, &value); err != nil {
		return 0, 0, err
	}
	if used, err = strconv.Atoi(value); err != nil {
		return 0, 0, fmt.Errorf("Threads_connected %q: %w", value, err)
	}
	if err = db.QueryRowContext(ctx, "SELECT @@max_connections").Scan(&limit); err != nil {
		return 0, 0, err
	}
	if limit <= 0 {
		return 0, 0, fmt.Errorf("max_connections is %d", limit)
	}
	return used, limit, nil
}

func (s *MySQLSpec) close() {
	s.once.Do(func() {}) // waits for an open in flight; none can start after
	if s.db != nil {
		s.db.Close()
	}
}

// mysqlSleep is how long the watch's query sleeps before it is sent again.
const mysqlSleep = time.Hour

// watchMySQL holds one more connection busy in SELECT SLEEP: a server that
// dies or shuts down breaks it (a SLEEP cut short returns 1), and that wakes
// the check. It costs one connection slot while it runs.
func watchMySQL(ctx context.Context, c *Check, wake func()) error {
	s := c.MySQL
	conn, _ := mysql.NewConnector(s.cfg)
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(0) // a connection that ended a session is not reused
	query := fmt.Sprintf("SELECT SLEEP(%d)", int(mysqlSleep/time.Second))
	return holdLoop(ctx, wake, func(ctx context.Context, ready func()) error {
		hello, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		held, err := db.Conn(hello)
		if err != nil {
			return s.redact(err)
		}
		defer held.Close()
		if err := held.PingContext(hello); err != nil {
			return s.redact(err)
		}
		ready()
		for {
			var cut int
			if err := held.QueryRowContext(ctx, query).Scan(&cut); err != nil {
				return s.redact(err)
			}
			if cut == 1 {
				return errors.New("SLEEP interrupted: the server is shutting down or the query was killed")
			}
		}
	})
}
