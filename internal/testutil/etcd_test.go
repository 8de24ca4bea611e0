package testutil

import (
	"context"
	"testing"
	"time"
)

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
