package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Redis is a throwaway redis-server (Debian redis-server) on 127.0.0.1 at a
// free port, without persistence. Stop kills it at once; Start brings it back
// on the same port.
type Redis struct {
	*proc
	Addr string
}

// StartRedis starts a server with extra command-line options
// (e.g. "--maxclients", "10", "--requirepass", "pw").
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	Need(t, "redis-server")
	dir := t.TempDir()
	port := FreePort(t)
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	log := filepath.Join(dir, "redis.log")
	r.proc = &proc{t: t, log: log, within: 30 * time.Second,
		argv: append([]string{"redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", dir, "--logfile", log}, extra...),
		ready: func() error {
			reply, err := r.try("PING")
			if err == nil && reply != "+PONG" && !strings.HasPrefix(reply, "-NOAUTH") {
				err = errors.New(reply)
			}
			return err
		}}
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// Do sends one inline command (words without spaces) on a new connection
// and returns the first line of the reply, failing the test on a network
// error.
func (r *Redis) Do(t testing.TB, words ...string) string {
	t.Helper()
	reply, err := r.try(words...)
	if err != nil {
		t.Fatalf("redis %v: %v", words, err)
	}
	return reply
}

func (r *Redis) try(words ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", strings.Join(words, " ")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}
