package sidecar

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RedisSpec checks that a Redis server answers PING, that its clients stay
// under a share of maxclients, and optionally that it is still the master.
// It speaks RESP itself: a handful of commands (AUTH, PING, INFO, CONFIG
// GET, BLPOP) do not justify a client library in the sidecar.
type RedisSpec struct {
	Address        string  `yaml:"address"`          // host:port
	Username       string  `yaml:"username"`         // ACL user (Redis 6+); AUTH with password alone when empty
	Password       string  `yaml:"password"`         // AUTH, when set
	MaxClientsUsed float64 `yaml:"max_clients_used"` // 0 < ratio <= 1, default 0.9
	MaxClients     int     `yaml:"max_clients"`      // the limit, for servers that show it nowhere the check may read
	Role           string  `yaml:"role"`             // master or replica; not checked when empty
	TLS            bool    `yaml:"tls"`              // TLS (Redis 6+ tls-port); plaintext otherwise
	CAFile         string  `yaml:"ca_file"`          // PEM roots to verify the server with (implies tls)

	tls *tls.Config

	mu   sync.Mutex
	conn *respConn // kept between runs
}

// DefaultMaxClientsUsed is the share of maxclients past which Redis counts
// as failing ("max number of clients reached").
const DefaultMaxClientsUsed = 0.9

func (s *RedisSpec) compile(*Check) error {
	if err := validAddress(s.Address); err != nil {
		return err
	}
	if s.Username != "" && s.Password == "" {
		return fmt.Errorf("username %q: needs a password", s.Username)
	}
	if err := validShare("max_clients_used", &s.MaxClientsUsed, DefaultMaxClientsUsed); err != nil {
		return err
	}
	if s.MaxClients < 0 {
		return fmt.Errorf("max_clients %d: must not be negative", s.MaxClients)
	}
	switch s.Role {
	case "", "master", "replica":
	default:
		return fmt.Errorf("role %q: must be master or replica", s.Role)
	}
	return s.compileTLS()
}

func (s *RedisSpec) compileTLS() (err error) {
	if !s.TLS && s.CAFile == "" {
		return nil
	}
	host, _, _ := net.SplitHostPort(s.Address)
	s.tls = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		s.tls.RootCAs, err = loadRoots(s.CAFile)
	}
	return err
}

func probeRedis(ctx context.Context, c *Check) Result {
	s := c.Redis
	s.mu.Lock()
	defer s.mu.Unlock()
	// A server's own error answer is no stale connection.
	info, err := onKept(ctx, s.conn != nil, func() (map[string]string, error) { return s.query(ctx) },
		func(err error) bool { return !errors.As(err, new(redisError)) })
	if err != nil {
		return fail(fmt.Errorf("redis %s: %w", s.Address, redactErr(err, s.Password)))
	}
	return s.judge(info)
}

// judge reads INFO's fields against the limits.
func (s *RedisSpec) judge(info map[string]string) Result {
	used, err1 := strconv.Atoi(info["connected_clients"])
	limit, err2 := strconv.Atoi(info["maxclients"])
	if err := errors.Join(err1, err2); err != nil || limit <= 0 {
		return fail(fmt.Errorf("redis %s: connected_clients %q, maxclients %q: not numbers", s.Address, info["connected_clients"], info["maxclients"]))
	}
	role := info["role"]
	if role == "slave" {
		role = "replica"
	}
	ratio := float64(used) / float64(limit)
	switch {
	case used >= limit:
		return fail(fmt.Errorf("redis %s: %d of %d clients connected: none left for applications", s.Address, used, limit))
	case ratio > s.MaxClientsUsed:
		return fail(fmt.Errorf("redis %s: %d of %d clients connected (%.0f%% > %.0f%%)", s.Address, used, limit, 100*ratio, 100*s.MaxClientsUsed))
	case s.Role != "" && role != s.Role:
		return fail(fmt.Errorf("redis %s: role %s, want %s", s.Address, role, s.Role))
	}
	return pass("%s, %d of %d clients connected", role, used, limit)
}

// query sends PING and INFO in one write on the kept connection (opening
// one if needed) and returns INFO's fields plus maxclients. A network error
// drops the connection; an error reply does not.
func (s *RedisSpec) query(ctx context.Context) (map[string]string, error) {
	if s.conn == nil {
		conn, err := s.dial(ctx)
		if err != nil {
			return nil, err
		}
		s.conn = conn
	}
	info, err := s.conn.info(ctx, s.MaxClients)
	if err != nil && !errors.As(err, new(redisError)) {
		s.conn.Close()
		s.conn = nil
	}
	return info, err
}

func (s *RedisSpec) dial(ctx context.Context) (*respConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.Address)
	if err != nil {
		return nil, err
	}
	if s.tls != nil {
		tc := tls.Client(nc, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	conn := &respConn{Conn: nc, r: bufio.NewReader(nc)}
	if s.Password != "" {
		auth := []string{"AUTH", s.Password}
		if s.Username != "" {
			auth = []string{"AUTH", s.Username, s.Password}
		}
		if _, err := conn.do(ctx, auth); err != nil {
			conn.Close()
			return nil, err // "AUTH: WRONGPASS ..."
		}
	}
	return conn, nil
}

func (s *RedisSpec) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// watchRedis holds a connection blocked in BLPOP on a key nobody writes: a
// server that dies closes it, and one demoted to replica unblocks it with an
// UNBLOCKED error. On a replica (BLPOP refused as a write) the connection is
// held idle and only its close wakes the check.
func watchRedis(ctx context.Context, c *Check, wake func()) error {
	s := c.Redis
	var nonce [8]byte
	rand.Read(nonce[:])
	key := "healthswitch:watch:" + c.Name + ":" + hex.EncodeToString(nonce[:])
	return holdLoop(ctx, wake, func(ctx context.Context, ready func()) error {
		hello, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		conn, err := s.dial(hello)
		if err != nil {
			return redactErr(err, s.Password)
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		if _, err := conn.do(hello, []string{"PING"}); err != nil {
			return redactErr(err, s.Password)
		}
		ready()
		conn.SetDeadline(time.Time{})
		if err := conn.send([]string{"BLPOP", key, "0"}); err != nil {
			return err
		}
		_, err = conn.read()
		if re := (redisError("")); errors.As(err, &re) && !strings.HasPrefix(string(re), "UNBLOCKED") {
			_, err = conn.r.ReadByte() // refused (a replica, an ACL): hold it idle until it closes
		}
		if err == nil {
			err = errors.New("BLPOP returned: someone pushed to " + key)
		}
		return err
	})
}

// respConn speaks just enough RESP2 for the commands above.
type respConn struct {
	net.Conn
	r *bufio.Reader
}

// redisError is an error reply ("-ERR ...").
type redisError string

func (e redisError) Error() string { return string(e) }

// maxBulk bounds one bulk reply (INFO is a few KiB).
const maxBulk = 1 << 20

func (c *respConn) send(cmds ...[]string) error {
	var b strings.Builder
	for _, args := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	_, err := io.WriteString(c.Conn, b.String())
	return err
}

// do sends the commands at once and reads one reply each, under ctx's
// deadline; the first error reply is returned after every reply was read.
func (c *respConn) do(ctx context.Context, cmds ...[]string) ([]any, error) {
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if err := c.send(cmds...); err != nil {
		return nil, err
	}
	replies := make([]any, len(cmds))
	var first error
	for i := range cmds {
		v, err := c.read()
		if re := (redisError("")); errors.As(err, &re) {
			if first == nil {
				first = fmt.Errorf("%s: %w", cmds[i][0], err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		replies[i] = v
	}
	return replies, first
}

// info runs the check's commands and returns INFO's fields. maxclients is
// the configured one, else INFO's (Redis 7+), else CONFIG GET's (one more
// round trip, older servers only).
func (c *respConn) info(ctx context.Context, maxClients int) (map[string]string, error) {
	replies, err := c.do(ctx, []string{"PING"}, []string{"INFO", "clients"}, []string{"INFO", "replication"})
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, r := range replies[1:] {
		text, _ := r.(string)
		for line := range strings.Lines(text) {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				fields[k] = v
			}
		}
	}
	switch {
	case maxClients > 0:
		fields["maxclients"] = strconv.Itoa(maxClients)
	case fields["maxclients"] == "":
		replies, err := c.do(ctx, []string{"CONFIG", "GET", "maxclients"})
		if err != nil {
			return nil, err
		}
		if kv, _ := replies[0].([]any); len(kv) == 2 {
			fields["maxclients"], _ = kv[1].(string)
		}
	}
	return fields, nil
}

// read reads one reply: string (simple or bulk), int64, []any, nil, or a
// redisError.
func (c *respConn) read() (any, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, redisError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n > maxBulk {
			return nil, fmt.Errorf("bulk length %q", body)
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n > 1024 {
			return nil, fmt.Errorf("array length %q", body)
		}
		out := make([]any, 0, max(n, 0))
		for range n {
			v, err := c.read()
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply %q", line)
}
