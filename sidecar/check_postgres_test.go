package sidecar

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

func TestPostgresCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	// max_connections 10, of which superuser_reserved_connections (3 by
	// default) are not open to applications.
	dsn, stop := testutil.StartPostgres(t, 10)
	c := newCheck(t, "postgres: {dsn: '"+dsn+"', max_connections_used: 0.5}\ninterval: 5s\ntimeout: 3s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(t *testing.T, dsn string) (*pgx.Conn, error) {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			t.Cleanup(func() { conn.Close(context.Background()) })
		}
		return conn, err
	}

	t.Run("alive", func(t *testing.T) {
		expect(t, c, true, "1 of 7 connections in use (3 more reserved)")
	})

	t.Run("connections over the share", func(t *testing.T) {
		var extra []*pgx.Conn
		for range 3 {
			conn, err := connect(t, dsn)
			if err != nil {
				t.Fatal(err)
			}
			extra = append(extra, conn)
		}
		expect(t, c, false, "4 of 7 connections in use (3 more reserved): 57% > 50%")
		for _, conn := range extra {
			conn.Close(ctx)
		}
		// Backends take a moment to exit after their client leaves.
		testutil.WaitFor(t, 5*time.Second, "connections released", func() bool { return c.Run(ctx).Healthy })
	})

	// Filled up to the slots applications may use, the server refuses an
	// application while max_connections is not reached: the check says down
	// even when any share of the slots is allowed.
	t.Run("full for applications", func(t *testing.T) {
		full := newCheck(t, "postgres: {dsn: '"+dsn+"', max_connections_used: 1}\ninterval: 5s\ntimeout: 3s")
		admin, err := connect(t, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec(ctx, "CREATE ROLE app LOGIN"); err != nil {
			t.Fatal(err)
		}
		appDSN := strings.Replace(dsn, "//probe@", "//app@", 1)
		expect(t, full, true, "3 of 7 connections in use") // c, full, admin
		var refused error
		for i := 0; i < 10 && refused == nil; i++ {
			_, refused = connect(t, appDSN)
		}
		if refused == nil || !strings.Contains(refused.Error(), "remaining connection slots are reserved") {
			t.Fatalf("an application is not refused: %v", refused)
		}
		expect(t, full, false, "7 of 7 connections in use (3 more reserved): full, applications are refused")
	})

	t.Run("stopped", func(t *testing.T) {
		stop()
		expect(t, c, false, "postgres 127.0.0.1: ")
	})
}
