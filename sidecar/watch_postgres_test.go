package sidecar

import (
	"strings"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/hysteresis"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// TestPostgresWatch: PostgreSQL stopped with pg_ctl stop -m fast, and with
// -m immediate, is down through the parked connection within moments of the
// stop under a 10 s poll; started again, it is up without waiting for the
// poll either.
func TestPostgresWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL three times")
	}
	pg := testutil.StartPostgresServer(t, 20)
	sources := traceSources(t)
	w := startWatched(t, newCheck(t, "postgres: {dsn: '"+pg.DSN+"'}\ninterval: 10s\ntimeout: 2s\nrise: 1"))
	if w.state() != hysteresis.Up {
		t.Fatalf("state %s before the fault: %s", w.state(), w.why())
	}
	for i, mode := range []string{"fast", "immediate"} {
		testutil.WaitFor(t, 5*time.Second, "a parked connection", func() bool { return sources("parked connection") == i+1 })
		start := time.Now()
		if err := pg.Stop(mode); err != nil {
			t.Fatal(err)
		}
		stopped := time.Since(start)
		w.waitState(t, time.Second, hysteresis.Down)
		if why := w.changedBecause(); !strings.Contains(why, "the server dropped the watch's connection") {
			t.Errorf("down because %q: want the check's own connection failing beside the parked one, without a reconnection", why)
		}
		t.Logf("pg_ctl stop -m %s (took %s): down %s after the stop began (%s)", mode, stopped, time.Since(start), w.why())
		if err := pg.Start(); err != nil {
			t.Fatal(err)
		}
		t.Logf("started again: up after %s", w.waitState(t, 3*time.Second, hysteresis.Up))
	}
}

// TestPostgresWatchFallback: a hot standby refuses LISTEN, so the parked
// connection cannot start: polling only, said in status and metrics; the
// check itself passes. A database that does not exist is not retried every
// 100 ms either (it would fill the server's log): polling only.
func TestPostgresWatchFallback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two PostgreSQL servers")
	}
	primary := testutil.StartPostgresServer(t, 20)
	t.Run("standby", func(t *testing.T) {
		standby := testutil.StartPostgresStandby(t, primary)
		w := startWatched(t, newCheck(t, "postgres: {dsn: '"+standby.DSN+"'}\ninterval: 100ms"))
		w.expectFallback(t, "LISTEN")
		if w.state() != hysteresis.Up {
			t.Errorf("state %s (%s): the check itself passes on a standby", w.state(), w.why())
		}
	})
	t.Run("no such database", func(t *testing.T) {
		dsn := strings.Replace(primary.DSN, "/postgres?", "/hs_no_such_db?", 1)
		w := startWatched(t, newCheck(t, "postgres: {dsn: '"+dsn+"'}\ninterval: 100ms"))
		w.expectFallback(t, "3D000")
	})
}

// A restart that is over before the next run is no fault: the kept
// connection died with the old server, and one fresh try finds the new one,
// polled or watched (once the watch has parked again).
func TestPostgresRestartOverIsNoFault(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts PostgreSQL")
	}
	pg := testutil.StartPostgresServer(t, 20)
	c := newCheck(t, "postgres: {dsn: '"+pg.DSN+"'}\ninterval: 10s\ntimeout: 2s")
	t.Cleanup(c.Close)
	expect(t, c, true, "connections in use")
	for _, mode := range []string{"fast", "immediate"} {
		if err := pg.Stop(mode); err != nil {
			t.Fatal(err)
		}
		if err := pg.Start(); err != nil {
			t.Fatal(err)
		}
		expect(t, c, true, "connections in use")
	}

	sources := traceSources(t)
	w := startWatched(t, newCheck(t, "postgres: {dsn: '"+pg.DSN+"'}\ninterval: 10s\ntimeout: 2s\nrise: 1"))
	testutil.WaitFor(t, 5*time.Second, "a parked connection", func() bool { return sources("parked connection") == 1 })
	if err := pg.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, time.Second, hysteresis.Down)
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the watch parked again", func() bool { return sources("parked connection") == 2 })
	w.waitState(t, 3*time.Second, hysteresis.Up)
}
