package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestNeedFindsShell(t *testing.T) {
	Need(t, "sh") // must not skip: sh is everywhere
}

func TestStartPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	dsn, stop := StartPostgres(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var max string
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&max); err != nil || max != "10" {
		t.Fatalf("max_connections = %q, %v", max, err)
	}
	conn.Close(ctx)
	stop()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connected after stop")
	}
}
