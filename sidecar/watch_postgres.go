package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// watchPostgres watches the parked connection (watchParked) and, with a
// data_dir, the postmaster's lock file there (watchLockFile).
func watchPostgres(ctx context.Context, c *Check, wake func()) error {
	if c.Postgres.DataDir == "" {
		return watchParked(ctx, c, wake)
	}
	return watchAll(ctx,
		func(ctx context.Context) error { return watchParked(ctx, c, wake) },
		func(ctx context.Context) error { return watchLockFile(ctx, c, wake) },
	)
}

// watchLockFile wakes the check whenever postmaster.pid is written,
// created or removed (inotify on the data directory, which sees the file
// replaced too). The postmaster rewrites it with "stopping" as soon as a
// shutdown request arrives, and only then ends its backends, newest first:
// the check reads the status (stopping) about a millisecond after the
// request, where the parked connection would end a few later, and a fast
// shutdown's would be no proof alone. The parked connection is then let go
// (a smart shutdown waits for every client). A data directory that is
// removed is waited for.
func watchLockFile(ctx context.Context, c *Check, wake func()) error {
	dir := c.Postgres.DataDir
	open := func() (*os.File, error) { return inotifyDir(dir) }
	return watchInotify(ctx, c, "lock file", open, lockFile, func() {
		wake()
		if stopping(dir) {
			signal(c.Postgres.stopping)
		}
	})
}

// inotifyDir opens an inotify descriptor on the entries of dir: writes,
// and entries created, removed or moved in or out.
func inotifyDir(dir string) (*os.File, error) {
	f, fd, err := newInotify()
	if err != nil {
		return nil, err
	}
	const mask = unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_ONLYDIR
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		f.Close()
		if errors.Is(err, unix.ENOENT) {
			return nil, err // removed: it may come back
		}
		return nil, fmt.Errorf("%w: %s: %w", errCannotWatch, dir, err)
	}
	return f, nil
}

// watchParked parks one connection of its own (beside the check's kept
// one): it LISTENs on a private channel and waits for a notification that
// never comes. PostgreSQL ends it with a FATAL error on a fast shutdown,
// and with a WARNING (goingDown) then EOF when an immediate shutdown or a
// crash restart ends its backend; the socket ends (EOF, RST) when the
// backend just dies. Any of these returns the wait and wakes the check. A
// host that vanishes silently sends nothing: polling covers that. A server
// that refuses LISTEN (a hot standby, a transaction-pooling pgbouncer)
// cannot be watched this way. The check reports a server that said it is
// going down at once; otherwise, while the parked connection is down, a
// failure of its own connection is not retried on a fresh one
// (check_postgres.go).
func watchParked(ctx context.Context, c *Check, wake func()) error {
	cfg := c.Postgres.cfg.Copy()
	cfg.RuntimeParams["application_name"] = "healthswitch-sidecar-watch"
	// said is the parked backend's last words, if it said the server is
	// going down. They are the event: the backend sends them before it
	// exits, and its socket ends only once the kernel has torn the process
	// down (a millisecond or more later).
	var said *pgconn.Notice
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if goingDown(n) && said == nil {
			said = n
			c.Postgres.dropped.Store(&pgDrop{why: n.Severity + " " + n.Code + " " + n.Message, at: time.Now(), down: true})
			wake()
		}
	}
	channel := "healthswitch_watch_" + randomHex(6)
	bo := watchBackoff(c, connBackoff)
	// A server shutting down (its lock file says so) refuses every new
	// connection, and logs each refusal: a smart shutdown may wait minutes
	// for its clients. The watch then knocks once per interval at most; a
	// run that passes (the server back) ends the pause at once.
	patient := watchBackoff(c, c.interval)
	drain(c.Postgres.fresh) // a connection the check opened before the watch began is older than the first parked one
	// pending: the parked connection ended; the check is woken at once and
	// again when the next attempt resolves. The server ends every backend
	// at once, but ours may end a moment before the check's own connection:
	// the run on the first error could still query the dying server and
	// pass.
	lost, pending := false, false
	for {
		conn, err := parkPostgres(ctx, c, cfg, channel)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if isCannotWatch(err) {
				return err
			}
			if pending {
				wake()
			}
			lost, pending = true, false
			pause := bo
			if s := c.Postgres; s.DataDir != "" && stopping(s.DataDir) {
				pause = patient
			}
			if !pause.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		c.Postgres.dropped.Store(nil)
		drain(c.Postgres.stopping) // said of a server that is up again, or we could not have parked
		traced(c, "parked connection")
		if lost || pending {
			wake()
		}
		lost, pending = false, false
		bo.reset()
		patient.reset()
		start := time.Now()
		said = nil
		conn, err = parked(ctx, c, cfg, channel, conn)
		closeQuietly(conn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Any end of the parked connection is the event; the check says why.
		// How it ended is kept for the check: its own connection failing
		// at the same time is the fault, with no reconnection to wait for.
		// A server that said it is going down was reported as it said so.
		if said == nil {
			d := &pgDrop{why: err.Error(), at: time.Now()}
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				d.why = pgErr.Code + " " + pgErr.Message
			}
			c.Postgres.dropped.Store(d)
		}
		wake()
		pending = true
		if time.Since(start) < 10*time.Millisecond && !bo.wait(ctx) { // never spin on a server that drops us
			return ctx.Err()
		}
	}
}

// parked waits on the parked connection until it ends (or ctx does), and
// returns the connection it waited on last with the error that ended it.
// PostgreSQL ends its backends newest first, one after the other, on a
// shutdown: each time the check opens a connection of its own, a new one
// is parked behind it (then the old one closed), so that the parked
// connection is the first of the two to go. The server's word on it
// (goingDown) then reports the fault without waiting for the check's.
func parked(ctx context.Context, c *Check, cfg *pgx.ConnConfig, channel string, conn *pgx.Conn) (*pgx.Conn, error) {
	for {
		fctx, _, cancelFresh := untilToken(ctx, c.Postgres.fresh)
		wctx, letGo, cancel := untilToken(fctx, c.Postgres.stopping)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		cancelFresh()
		// Only a wait that ended on our cancel: one that ended on the
		// server's word at the same moment is the event.
		if ctx.Err() != nil || !errors.Is(err, context.Canceled) {
			return conn, err
		}
		if letGo() {
			return conn, errors.New("let go: the server is shutting down (" + lockFile + ")")
		}
		// Cancelled by us: pgx leaves the connection open on a cancelled
		// wait, so the old one stays parked until the new one is.
		if newer, err := parkPostgres(ctx, c, cfg, channel); err == nil {
			closeQuietly(conn)
			conn = newer
			traced(c, "parked again behind the check's connection")
		}
	}
}

func parkPostgres(ctx context.Context, c *Check, cfg *pgx.ConnConfig, channel string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "28") || strings.HasPrefix(pgErr.Code, "3D")) {
		// Refused credentials or database: retrying every 100 ms would only
		// fill the server's log; the check's own runs report it.
		return nil, fmt.Errorf("%w: %w", errCannotWatch, err)
	}
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		closeQuietly(conn)
		if errors.As(err, &pgErr) { // the server said no: it will keep saying no
			return nil, fmt.Errorf("%w: LISTEN: %w", errCannotWatch, err)
		}
		return nil, err
	}
	return conn, nil
}

func closeQuietly(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), waitDelay)
	defer cancel()
	conn.Close(ctx)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
