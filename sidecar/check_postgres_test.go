package sidecar

import (
	"context"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/jackc/pgx/v5"
)

func TestPostgresCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	dsn, stop := testutil.StartPostgres(t, 10)
	c := newCheck(t, "postgres: {dsn: '"+dsn+"', max_connections_used: 0.5}\ninterval: 5s\ntimeout: 3s")

	t.Run("alive", func(t *testing.T) {
		expect(t, c, true, "1 of 10 connections in use")
	})

	t.Run("connections over the limit", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var extra []*pgx.Conn
		for range 5 {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			extra = append(extra, conn)
		}
		expect(t, c, false, "6 of 10 connections in use (60% > 50%)")
		for _, conn := range extra {
			conn.Close(ctx)
		}
		// Backends take a moment to exit after their client leaves.
		eventually(t, 5*time.Second, "connections released", func() bool { return c.Run(ctx).Healthy })
	})

	t.Run("stopped", func(t *testing.T) {
		stop()
		expect(t, c, false, "postgres 127.0.0.1: ")
	})
}
