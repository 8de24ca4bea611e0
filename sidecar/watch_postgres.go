package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// watchPostgres parks one connection of its own (beside the check's kept
// one): it LISTENs on a private channel and waits for a notification that
// never comes. PostgreSQL sends a FATAL error on it at once when it shuts
// down (fast or immediate), and the socket ends (EOF, RST) when the server
// process dies; either returns the wait and wakes the check. A host that
// vanishes silently sends nothing: polling covers that. A server that
// refuses LISTEN (a hot standby, a transaction-pooling pgbouncer) cannot be
// watched this way. While the parked connection is down, a failure of the
// check's own connection is not retried on a fresh one (check_postgres.go).
func watchPostgres(ctx context.Context, c *Check, wake func()) error {
	cfg := c.Postgres.cfg.Copy()
	cfg.RuntimeParams["application_name"] = "healthswitch-sidecar-watch"
	channel := "healthswitch_watch_" + randomHex(6)
	bo := watchBackoff(c, connBackoff)
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
			if !bo.wait(ctx) {
				return ctx.Err()
			}
			continue
		}
		c.Postgres.dropped.Store(nil)
		traced(c, "parked connection")
		if lost || pending {
			wake()
		}
		lost, pending = false, false
		bo.reset()
		start := time.Now()
		_, err = conn.WaitForNotification(ctx)
		closeQuietly(conn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Any end of the parked connection is the event; the check says why.
		// How it ended is kept for the check: its own connection failing
		// at the same time is then the fault, with no reconnection to wait
		// for.
		why := err.Error()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			why = pgErr.Code + " " + pgErr.Message
		}
		c.Postgres.dropped.Store(&why)
		wake()
		pending = true
		if time.Since(start) < 10*time.Millisecond && !bo.wait(ctx) { // never spin on a server that drops us
			return ctx.Err()
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
