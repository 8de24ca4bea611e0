package sidecar

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

func TestMySQLCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	m := testutil.StartMariaDB(t, 10)
	c := newCheck(t, "mysql: {dsn: '"+m.DSN("probe")+"', max_connections_used: 1}\ninterval: 5s\ntimeout: 3s")

	t.Run("alive", func(t *testing.T) {
		settle(t, c, "1 of 10 connections in use") // root's setup connection gone
	})

	t.Run("at the connection limit", func(t *testing.T) {
		apps := openMySQL(t, m, 50)
		if len(apps) != 9 {
			t.Errorf("applications got %d connections beside the check's; want 9 (max_connections 10)", len(apps))
		}
		// The refused connection counts in Threads_connected until its thread ends.
		testutil.WaitFor(t, 5*time.Second, "the refused connection gone", func() bool {
			return strings.Contains(c.Run(context.Background()).Why(), "10 of 10")
		})
		expect(t, c, false, "10 of 10 connections in use: none left for applications")
		apps[0].Close()
		testutil.WaitFor(t, 5*time.Second, "a slot freed", func() bool { return c.Run(context.Background()).Healthy })
		expect(t, c, true, "9 of 10 connections in use")
	})

	t.Run("over the ratio", func(t *testing.T) {
		c := newCheck(t, "mysql: {dsn: '"+m.DSN("probe")+"', max_connections_used: 0.5}\ninterval: 5s\ntimeout: 3s")
		settle(t, c, "2 of 10 connections in use") // this check's and the one above
		openMySQL(t, m, 4)
		expect(t, c, false, "6 of 10 connections in use (60% > 50%)")
	})

	t.Run("stopped", func(t *testing.T) {
		m.Stop()
		start := time.Now()
		r := expect(t, c, false, "mysql 127.0.0.1:")
		if took := time.Since(start); took > time.Second {
			t.Errorf("a stopped server took %s to fail the check", took)
		}
		if strings.Contains(r.Why(), testutil.MariaDBPassword) {
			t.Errorf("password in %q", r.Why())
		}
	})

	t.Run("back", func(t *testing.T) {
		m.Start()
		expect(t, c, true, "connections in use")
	})

	t.Run("wrong password redacted", func(t *testing.T) {
		c := newCheck(t, fmt.Sprintf("mysql: {dsn: 'probe:not-the-pw@tcp(127.0.0.1:%d)/'}\ninterval: 5s\ntimeout: 3s", m.Port))
		r := expect(t, c, false, "Access denied")
		if strings.Contains(r.Why(), "not-the-pw") {
			t.Errorf("password in %q", r.Why())
		}
	})
}

// openMySQL opens up to n application connections, until the server refuses
// one with "Too many connections" (error 1040), and returns those it opened;
// they close when the (sub)test ends.
func openMySQL(t *testing.T, m *testutil.MariaDB, n int) []driver.Conn {
	t.Helper()
	cfg, _ := mysql.ParseDSN(m.DSN("app"))
	cfg.Logger = &mysql.NopLogger{}
	conn, _ := mysql.NewConnector(cfg)
	var apps []driver.Conn
	t.Cleanup(func() {
		for _, a := range apps {
			a.Close()
		}
	})
	for range n {
		a, err := conn.Connect(context.Background())
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == 1040 {
			return apps
		}
		if err != nil {
			t.Fatalf("connection %d: %v", len(apps)+1, err)
		}
		apps = append(apps, a)
	}
	return apps
}

// sleeping counts the watch's held queries.
const sleeping = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(%'"

func TestWatchMySQL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	m := testutil.StartMariaDB(t, 20)
	c := newCheck(t, "mysql: {dsn: '"+m.DSN("probe")+"'}\ninterval: 5s\ntimeout: 3s")
	w := startWatch(t, watchMySQL, c)
	testutil.WaitFor(t, 5*time.Second, "the watch's SLEEP running", func() bool {
		return m.QueryInt(t, sleeping) == 1
	})
	// A SLEEP cut short (KILL QUERY, as at shutdown) wakes the check too.
	w.faultToWake(t, func() {
		m.Root(t, fmt.Sprintf("KILL QUERY %d", m.QueryInt(t, strings.Replace(sleeping, "COUNT(*)", "ID", 1))))
	}, time.Second)
	testutil.WaitFor(t, 5*time.Second, "the watch's SLEEP running again", func() bool {
		return m.QueryInt(t, sleeping) == 1
	})

	w.faultToWake(t, m.Stop, time.Second)
	expect(t, c, false, "mysql 127.0.0.1:")
	w.backToWake(t, m.Start)
	settle(t, c, "2 of 20 connections in use") // the check's and the watch's
	w.stop(t)
	// The server notices a client gone from under SLEEP within 5 s: a
	// stopped watch does not keep a slot.
	testutil.WaitFor(t, 10*time.Second, "the watch's SLEEP gone from the server", func() bool { return m.QueryInt(t, sleeping) == 0 })
}

// watch runs one event source the way the watch framework will, counting
// the wakes.
type watch struct {
	wakes   atomic.Int64
	atFault int64 // wakes before the last fault
	cancel  context.CancelFunc
	done    chan error
}

func startWatch(t *testing.T, source func(context.Context, *Check, func()) error, c *Check) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch{cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- source(ctx, c, func() { w.wakes.Add(1) }) }()
	t.Cleanup(cancel)
	return w
}

// faultToWake causes fault and waits for a wake within bound.
func (w *watch) faultToWake(t *testing.T, fault func(), bound time.Duration) time.Duration {
	t.Helper()
	before := w.wakes.Load()
	w.atFault = before
	start := time.Now()
	fault()
	testutil.WaitFor(t, bound, "a wake after the fault", func() bool { return w.wakes.Load() > before })
	took := time.Since(start)
	t.Logf("fault to wake: %s", took)
	return took
}

// backToWake, after a faultToWake that stopped the server, waits for the
// second wake (the watch's first attempt to reconnect failed), then starts
// the server and waits for the wake of the new connection.
func (w *watch) backToWake(t *testing.T, start func()) {
	t.Helper()
	testutil.WaitFor(t, 3*time.Second, "a wake when the watch cannot reconnect", func() bool { return w.wakes.Load() >= w.atFault+2 })
	before := w.wakes.Load()
	start()
	testutil.WaitFor(t, 5*time.Second, "a wake when the server is back", func() bool { return w.wakes.Load() > before })
}

// stop cancels the source and checks it returns promptly with ctx's error.
func (w *watch) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case err := <-w.done:
		if !errors.Is(err, context.Canceled) && err != nil {
			t.Errorf("source returned %v at shutdown; want context.Canceled or nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Error("source still running 3s after its context was cancelled")
	}
}

func TestMySQLTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	_, certFile, keyFile, _ := testutil.SelfSigned(t)
	m := testutil.StartMariaDB(t, 10, "--ssl-cert="+certFile, "--ssl-key="+keyFile)
	settle(t, newCheck(t, "mysql: {dsn: '"+m.DSN("probe")+"', ca_file: '"+certFile+"'}\ninterval: 5s\ntimeout: 3s"), "1 of 10 connections in use")
	expect(t, newCheck(t, "mysql: {dsn: '"+m.DSN("probe")+"?tls=true'}\ninterval: 5s\ntimeout: 3s"), false, "certificate signed by unknown authority")
}
