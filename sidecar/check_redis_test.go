package sidecar

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

func TestRedisCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	r := testutil.StartRedis(t, "--maxclients", "10")
	other := testutil.StartRedis(t)
	c := newCheck(t, "redis: {address: '"+r.Addr+"', max_clients_used: 1, role: master}\ninterval: 5s\ntimeout: 3s")

	t.Run("alive", func(t *testing.T) {
		settle(t, c, "master, 1 of 10 clients connected")
	})

	t.Run("at the client limit", func(t *testing.T) {
		clients := openRedis(t, r, 50)
		if len(clients) != 9 {
			t.Errorf("applications got %d connections beside the check's; want 9 (maxclients 10)", len(clients))
		}
		expect(t, c, false, "10 of 10 clients connected: none left for applications")
		clients[0].Close()
		testutil.WaitFor(t, 5*time.Second, "a slot freed", func() bool { return c.Run(context.Background()).Healthy })
		expect(t, c, true, "9 of 10 clients connected")
	})

	t.Run("over the ratio", func(t *testing.T) {
		c := newCheck(t, "redis: {address: '"+r.Addr+"', max_clients_used: 0.5}\ninterval: 5s\ntimeout: 3s")
		expect(t, c, true, "2 of 10 clients connected")
		openRedis(t, r, 4)
		expect(t, c, false, "6 of 10 clients connected (60% > 50%)")
	})

	t.Run("demoted to replica", func(t *testing.T) {
		r.Do(t, "REPLICAOF", "127.0.0.1", strings.Split(other.Addr, ":")[1])
		expect(t, c, false, "role replica, want master")
		r.Do(t, "REPLICAOF", "NO", "ONE")
		expect(t, c, true, "master, ")
	})

	t.Run("stopped", func(t *testing.T) {
		r.Stop()
		start := time.Now()
		expect(t, c, false, "redis "+r.Addr+": ")
		if took := time.Since(start); took > time.Second {
			t.Errorf("a stopped server took %s to fail the check", took)
		}
	})

	t.Run("back", func(t *testing.T) {
		r.Start()
		expect(t, c, true, "master, 1 of 10 clients connected")
	})
}

func TestRedisPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	r := testutil.StartRedis(t, "--requirepass", "s3cret-pw")
	good := newCheck(t, "redis: {address: '"+r.Addr+"', password: s3cret-pw}\ninterval: 5s\ntimeout: 3s")
	expect(t, good, true, "master, 1 of ")
	for yaml, why := range map[string]string{
		"redis: {address: '" + r.Addr + "', password: not-the-pw}":                    ": AUTH: WRONGPASS invalid username-password pair",
		"redis: {address: '" + r.Addr + "', username: default, password: not-the-pw}": ": AUTH: WRONGPASS invalid username-password pair",
		"redis: {address: '" + r.Addr + "'}":                                          ": PING: NOAUTH Authentication required.",
	} {
		res := expect(t, newCheck(t, yaml+"\ninterval: 5s\ntimeout: 3s"), false, "redis "+r.Addr+why)
		if strings.Contains(res.Why(), "not-the-pw") {
			t.Errorf("password in %q", res.Why())
		}
	}
}

// openRedis opens up to n client connections, until the server refuses one
// ("max number of clients reached"), and returns those it kept; they close
// when the (sub)test ends.
func openRedis(t *testing.T, r *testutil.Redis, n int) []net.Conn {
	t.Helper()
	var kept []net.Conn
	t.Cleanup(func() {
		for _, c := range kept {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", r.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("PING\r\n"))
		buf := make([]byte, 128)
		k, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if reply := string(buf[:k]); reply != "+PONG\r\n" {
			c.Close()
			if !strings.Contains(reply, "max number of clients reached") {
				t.Fatalf("client %d: %q", len(kept)+1, reply)
			}
			return kept
		}
		c.SetDeadline(time.Time{})
		kept = append(kept, c)
	}
	return kept
}

func TestWatchRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	r := testutil.StartRedis(t)
	other := testutil.StartRedis(t)
	c := newCheck(t, "redis: {address: '"+r.Addr+"', role: master}\ninterval: 5s\ntimeout: 3s")
	w := startWatch(t, watchRedis, c)
	testutil.WaitFor(t, 5*time.Second, "the watch's connection blocked", func() bool {
		return strings.Contains(redisInfo(t, r), "blocked_clients:1")
	})

	w.faultToWake(t, func() { r.Do(t, "REPLICAOF", "127.0.0.1", strings.Split(other.Addr, ":")[1]) }, time.Second)
	expect(t, c, false, "role replica, want master")
	r.Do(t, "REPLICAOF", "NO", "ONE")
	// The break woke it, then the new connection it holds.
	testutil.WaitFor(t, 5*time.Second, "the watch holding a new connection", func() bool { return w.wakes.Load() >= w.atFault+2 })

	w.faultToWake(t, r.Stop, time.Second)
	expect(t, c, false, "redis "+r.Addr+": ")
	w.backToWake(t, r.Start)
	expect(t, c, true, "master, ")
	w.stop(t)
}

// redisInfo reads INFO clients in full (Do returns only the first line).
func redisInfo(t *testing.T, r *testutil.Redis) string {
	t.Helper()
	c := newCheck(t, "redis: {address: '"+r.Addr+"'}\ninterval: 5s\ntimeout: 3s")
	conn, err := c.Redis.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	replies, err := conn.do(ctx, []string{"INFO", "clients"})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := replies[0].(string)
	return s
}

// Managed Redis often refuses CONFIG: Redis 7 shows maxclients in INFO, and
// max_clients overrides both.
func TestRedisWithoutConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	r := testutil.StartRedis(t, "--rename-command", "CONFIG", "")
	asks := newCheck(t, "redis: {address: '"+r.Addr+"'}\ninterval: 5s\ntimeout: 3s")
	settle(t, asks, "master, 1 of 10000 clients connected")
	told := newCheck(t, "redis: {address: '"+r.Addr+"', max_clients: 100}\ninterval: 5s\ntimeout: 3s")
	settle(t, told, "master, 2 of 100 clients connected")
}

// settle waits until c passes with exactly why: a server notices a closed
// client connection (the test helpers') a moment after it closed.
func settle(t *testing.T, c *Check, why string) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, why, func() bool {
		r := c.Run(context.Background())
		return r.Healthy && r.Why() == why
	})
}

func TestRedisTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	_, certFile, keyFile, _ := testutil.SelfSigned(t)
	port := testutil.FreePort(t)
	testutil.StartRedis(t, "--tls-port", fmt.Sprint(port), "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-auth-clients", "no")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	settle(t, newCheck(t, "redis: {address: '"+addr+"', ca_file: '"+certFile+"'}\ninterval: 5s\ntimeout: 3s"), "master, 1 of 10000 clients connected")
	expect(t, newCheck(t, "redis: {address: '"+addr+"', tls: true}\ninterval: 5s\ntimeout: 3s"), false, "certificate signed by unknown authority")
}
