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

func TestStartEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := StartEtcd(t, 3)
	cli := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	old := c.KillLeader()
	if c.Healthy(old) {
		t.Fatal("the killed leader still answers")
	}
	WaitFor(t, 10*time.Second, "a new leader", func() bool { l := c.Leader(); return l >= 0 && l != old })
	c.Restart(old)
	c.WaitHealthy(20 * time.Second)
	c.StopAll()
	for i := range c.Members {
		if c.Healthy(i) {
			t.Fatalf("member %d answers after StopAll", i)
		}
	}
	c.StartAll()
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after a full restart: %v %v", resp, err)
	}
}
