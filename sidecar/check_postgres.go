package sidecar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultMaxConnectionsUsed is the share of max_connections in use past which
// a database counts as failing ("connection limit exceeded").
const DefaultMaxConnectionsUsed = 0.9

// PostgresSpec checks that a PostgreSQL server answers and that its client
// connections stay under a share of max_connections.
type PostgresSpec struct {
	DSN                string  `yaml:"dsn"`                  // libpq URL or key=value string
	MaxConnectionsUsed float64 `yaml:"max_connections_used"` // 0 < ratio <= 1, default 0.9
	// DataDir is the server's data directory, where the sidecar can read
	// it (the same host, or the pod's data volume, as the server's user or
	// root): the postmaster marks its postmaster.pid "stopping" the moment
	// a shutdown begins, before it ends any connection.
	DataDir string `yaml:"data_dir"`

	cfg  *pgx.ConnConfig
	mu   sync.Mutex
	conn *pgx.Conn // kept between runs: a new backend every 100 ms would load the server

	// dropped says how the server ended the watch's parked connection,
	// until the watch parks again; nil otherwise.
	dropped atomic.Pointer[pgDrop]
	// fresh has a token when the check has opened a connection since the
	// watch last parked one: the watch then parks a newer one.
	fresh chan struct{}
	// stopping has a token when the lock file said the server is shutting
	// down: the watch lets its parked connection go, which a smart
	// shutdown would otherwise wait for.
	stopping chan struct{}
}

// pgDrop is how the server ended the watch's parked connection: a FATAL
// 57P01 on a fast shutdown; a WARNING and EOF when an immediate shutdown
// or a crash killed the backend; EOF alone when only the backend was
// killed.
type pgDrop struct {
	why string
	at  time.Time
	// down: the server said, as it ended the connection, that it is going
	// down (goingDown); told: a run has reported it.
	down bool
	told atomic.Bool
}

// goingDown says whether a notice leaves no doubt that the server is
// going down: a PostgreSQL backend sends one as it exits on the
// postmaster's SIGQUIT, a WARNING 57P01 for an immediate shutdown
// (PostgreSQL 14+), 57P02 when every backend is ended after another one
// crashed (and, before 14, for an immediate shutdown too). A fast
// shutdown's FATAL 57P01 is no proof: pg_terminate_backend sends the same.
// A backend sent SIGQUIT by hand says WARNING 57P01 too, but its exit code
// makes the postmaster end every backend and restart (a crash restart): the
// server is down then as well. Codes and the unlocalized severity do not
// depend on lc_messages.
func goingDown(n *pgconn.Notice) bool {
	severity := n.SeverityUnlocalized
	if severity == "" { // PostgreSQL before 9.6
		severity = n.Severity
	}
	return n.Code == "57P02" || n.Code == "57P01" && severity == "WARNING"
}

// The postmaster's lock file in the data directory, and the status its
// eighth line holds from PostgreSQL 10 on (padded to one length, so that it
// is rewritten in place): "starting", "ready   ", "standby ", or "stopping"
// from the moment a shutdown request (smart, fast or immediate) arrives,
// before any backend is told.
const (
	lockFile   = "postmaster.pid"
	pmStopping = "stopping"
)

// stopping says whether the postmaster of dataDir has begun to shut down.
// A lock file that is missing or cannot be read says nothing: the check's
// connection decides then.
func stopping(dataDir string) bool {
	b, err := os.ReadFile(filepath.Join(dataDir, lockFile))
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	return len(lines) > 7 && strings.TrimSpace(lines[7]) == pmStopping
}

// connectionsQuery counts client connections only: PostgreSQL's own
// background processes also appear in pg_stat_activity but do not use up
// max_connections slots. The slots kept for superusers
// (superuser_reserved_connections) and for roles with pg_use_reserved_connections
// (reserved_connections, PostgreSQL 16+; NULL before) are not open to
// applications: a server with every other slot taken refuses them ("remaining
// connection slots are reserved") while it still has slots free.
const connectionsQuery = `SELECT count(*) FILTER (WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0)
FROM pg_stat_activity`

// slots is what connectionsQuery found.
type slots struct {
	used, max, reserved int
}

// open is how many connections applications may hold.
func (c slots) open() int { return c.max - c.reserved }

func (s *PostgresSpec) compile(*Check) (err error) {
	if s.DSN == "" {
		return errors.New("dsn: required")
	}
	if s.cfg, err = pgx.ParseConfig(s.DSN); err != nil {
		return fmt.Errorf("dsn: %w", err)
	}
	s.cfg.RuntimeParams["application_name"] = "healthswitch-sidecar"
	s.fresh = make(chan struct{}, 1)
	s.stopping = make(chan struct{}, 1)
	if s.DataDir != "" {
		if !filepath.IsAbs(s.DataDir) {
			return fmt.Errorf("data_dir %q: must be an absolute path", s.DataDir)
		}
		// PG_VERSION is there whenever initdb has run, up or down; reading
		// it proves the sidecar may look into the folder too.
		if _, err := os.ReadFile(filepath.Join(s.DataDir, "PG_VERSION")); err != nil {
			return fmt.Errorf("data_dir %s: not a PostgreSQL data directory the sidecar can read: %w", s.DataDir, err)
		}
	}
	if s.MaxConnectionsUsed == 0 {
		s.MaxConnectionsUsed = DefaultMaxConnectionsUsed
	}
	if s.MaxConnectionsUsed < 0 || s.MaxConnectionsUsed > 1 {
		return fmt.Errorf("max_connections_used %g: must be in (0, 1]", s.MaxConnectionsUsed)
	}
	return nil
}

func probePostgres(ctx context.Context, c *Check) Result {
	s := c.Postgres
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.DataDir != "" && stopping(s.DataDir) {
		s.dropLocked() // a smart shutdown waits for every client to leave
		return fail(fmt.Errorf("postgres %s: the server is shutting down: %s says %s", s.cfg.Host, filepath.Join(s.DataDir, lockFile), pmStopping))
	}
	// The server said, just now, as it ended the watch's connection, that
	// it is going down: the run that event wakes says so at once, without
	// waiting for the check's own backend to be ended too. It is told once:
	// later runs decide on their own connection.
	if d := s.dropped.Load(); d != nil && d.down && time.Since(d.at) < c.timeout && !d.told.Swap(true) {
		s.dropLocked()
		return fail(fmt.Errorf("postgres %s: the server is going down: it said so as it ended the watch's connection (%s)", s.cfg.Host, d.why))
	}
	// While the server has just ended the watch's parked connection too,
	// a failure of the kept one is no stale connection: two backends gone
	// at once is the server going down (or crashing), and a fresh try would
	// only wait in the dying postmaster's backlog until it exits.
	var dropped *pgDrop
	n, err := onKept(ctx, s.conn != nil, func() (slots, error) { return s.query(ctx) },
		func(error) bool { dropped = s.dropped.Load(); return dropped == nil })
	if err != nil && dropped != nil {
		return fail(fmt.Errorf("postgres %s: the server dropped the watch's connection (%s) and the check's: %w", s.cfg.Host, dropped.why, err))
	}
	if err != nil {
		return fail(fmt.Errorf("postgres %s: %w", s.cfg.Host, err))
	}
	inUse := fmt.Sprintf("%d of %d connections in use (%d more reserved)", n.used, n.open(), n.reserved)
	if n.used >= n.open() {
		return fail(fmt.Errorf("postgres %s: %s: full, applications are refused", s.cfg.Host, inUse))
	}
	ratio := float64(n.used) / float64(n.open())
	if ratio > s.MaxConnectionsUsed {
		return fail(fmt.Errorf("postgres %s: %s: %.0f%% > %.0f%%", s.cfg.Host, inUse, 100*ratio, 100*s.MaxConnectionsUsed))
	}
	return pass("%s", inUse)
}

// query runs the check's query on the kept connection, opening one if
// needed; on any error the connection is dropped.
func (s *PostgresSpec) query(ctx context.Context) (n slots, err error) {
	if s.conn == nil {
		if s.conn, err = pgx.ConnectConfig(ctx, s.cfg); err != nil {
			s.conn = nil
			return n, err
		}
		signal(s.fresh)
	}
	if err = s.conn.QueryRow(ctx, connectionsQuery).Scan(&n.used, &n.max, &n.reserved); err != nil {
		s.dropLocked()
		return n, err
	}
	if n.open() <= 0 {
		return n, fmt.Errorf("max_connections %d leaves no connection to applications (%d reserved)", n.max, n.reserved)
	}
	return n, nil
}

func (s *PostgresSpec) dropLocked() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), waitDelay)
		s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
}

func (s *PostgresSpec) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked()
}
