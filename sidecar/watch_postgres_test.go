package sidecar

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
	// A fast shutdown ends each backend as pg_terminate_backend would: the
	// check's own connection failing beside the parked one is the proof.
	// An immediate shutdown says so as it ends the parked connection.
	for i, stop := range []struct{ mode, why string }{
		{"fast", "the server dropped the watch's connection (57P01 "},
		{"immediate", "the server is going down: it said so as it ended the watch's connection (WARNING 57P01 "},
	} {
		testutil.WaitFor(t, 5*time.Second, "a parked connection", func() bool { return sources("parked connection") == i+1 })
		// PostgreSQL ends backends newest first: the parked one goes first.
		testutil.WaitFor(t, 5*time.Second, "the parked connection newer than the check's", func() bool { return parkedNewest(t, pg.DSN) })
		start := time.Now()
		if err := pg.Stop(stop.mode); err != nil {
			t.Fatal(err)
		}
		stopped := time.Since(start)
		mode := stop.mode
		w.waitState(t, time.Second, hysteresis.Down)
		if why := w.changedBecause(t); !strings.Contains(why, stop.why) {
			t.Errorf("pg_ctl stop -m %s: down because %q, want %q", mode, why, stop.why)
		}
		t.Logf("pg_ctl stop -m %s (took %s): down %s after the stop began (%s)", mode, stopped, time.Since(start), w.why())
		if err := pg.Start(); err != nil {
			t.Fatal(err)
		}
		t.Logf("started again: up after %s", w.waitState(t, 3*time.Second, hysteresis.Up))
	}
}

// TestPostgresWatchLockFile: with data_dir, a smart shutdown, which ends
// no connection, is down through the lock file alone (the server still
// answers the sidecar's kept connection: only postmaster.pid says it is
// stopping), and the sidecar lets its own connections go, so that the
// shutdown ends as soon as the last application leaves. Fast and immediate
// shutdowns are down within moments too, and each restart is up.
func TestPostgresWatchLockFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL four times")
	}
	pg := testutil.StartPostgresServer(t, 20)
	sources := traceSources(t)
	w := startWatched(t, newCheck(t, "postgres: {dsn: '"+pg.DSN+"', data_dir: "+pg.DataDir()+"}\ninterval: 10s\ntimeout: 2s\nrise: 1"))
	testutil.WaitFor(t, 5*time.Second, "the lock file watched", func() bool { return sources("lock file") == 1 })
	testutil.WaitFor(t, 5*time.Second, "a parked connection", func() bool { return sources("parked connection") == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := pgx.Connect(ctx, pg.DSN) // an application's session: a smart shutdown waits for it
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- pg.Stop("smart") }()
	w.waitState(t, time.Second, hysteresis.Down)
	want := "the server is shutting down: " + filepath.Join(pg.DataDir(), "postmaster.pid") + " says stopping"
	if why := w.changedBecause(t); !strings.Contains(why, want) {
		t.Errorf("pg_ctl stop -m smart: down because %q, want %q", why, want)
	}
	if err := app.Ping(ctx); err != nil {
		t.Fatalf("the application's session during a smart shutdown: %v", err)
	}
	// While the shutdown waits for the application, the server refuses
	// (and logs) every new connection: the watch knocks once per interval
	// at most, not every 100 ms. A rate needs a window to be seen in.
	refused := func() int {
		b, _ := os.ReadFile(pg.LogFile())
		return strings.Count(string(b), "the database system is shutting down")
	}
	before := refused()
	time.Sleep(3 * time.Second)
	if n := refused() - before; n > 15 {
		t.Errorf("%d connections refused in 3 s of a smart shutdown: the watch knocks too often", n)
	} else {
		t.Logf("%d connections refused in 3 s of a smart shutdown", n)
	}
	app.Close(ctx) // the last client but the sidecar's
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("pg_ctl stop -m smart still waits 15 s after the application left: the sidecar's connections hold the server up")
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	w.waitState(t, 3*time.Second, hysteresis.Up)

	for i, mode := range []string{"fast", "immediate"} {
		testutil.WaitFor(t, 5*time.Second, "the watch parked again", func() bool { return sources("parked connection") >= i+2 })
		if err := pg.Stop(mode); err != nil {
			t.Fatal(err)
		}
		w.waitState(t, time.Second, hysteresis.Down)
		t.Logf("pg_ctl stop -m %s: %s", mode, w.changedBecause(t))
		if err := pg.Start(); err != nil {
			t.Fatal(err)
		}
		w.waitState(t, 3*time.Second, hysteresis.Up)
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

// A backend of ours ended by pg_terminate_backend (an administrator, a
// pooler's cleanup) is no fault, though the server says the same FATAL
// 57P01 as on a fast shutdown: ending the parked connection wakes the
// check, which finds the server answering on its own; ending the check's
// own is caught by its one fresh try.
func TestPostgresWatchTerminatedIsNoFault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := testutil.StartPostgresServer(t, 20)
	sources := traceSources(t)
	w := startWatched(t, newCheck(t, "postgres: {dsn: '"+pg.DSN+"'}\ninterval: 10s\ntimeout: 2s\nfall: 1\nrise: 1"))
	testutil.WaitFor(t, 5*time.Second, "a parked connection", func() bool { return sources("parked connection") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	runs := func() uint64 { _, _, _, n, _ := w.r.snapshot(); return n }
	changes := func() int { w.mu.Lock(); defer w.mu.Unlock(); return len(w.changes) }
	changed := changes() // the first verdict: up
	terminate := func(app string) {
		t.Helper()
		var ended int
		if err := admin.QueryRow(ctx, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&ended); err != nil || ended != 1 {
			t.Fatalf("terminating %s: %d ended, %v", app, ended, err)
		}
	}

	before := runs()
	terminate("healthswitch-sidecar-watch")
	testutil.WaitFor(t, 5*time.Second, "the watch parked again", func() bool { return sources("parked connection") == 2 })
	testutil.WaitFor(t, 5*time.Second, "a run woken by the parked connection's end", func() bool { return runs() > before })

	terminate("healthswitch-sidecar")
	before = runs()
	w.r.wake()
	testutil.WaitFor(t, 5*time.Second, "a run on the ended connection", func() bool { return runs() > before })
	if w.state() != hysteresis.Up || changes() != changed {
		t.Errorf("state %s, changed because %q: a terminated backend is no fault (last: %s)", w.state(), w.changedBecause(t), w.why())
	}
}

func TestGoingDown(t *testing.T) {
	for _, c := range []struct {
		severity, code string
		want           bool
	}{
		{"WARNING", "57P01", true}, // immediate shutdown (PostgreSQL 14+)
		{"WARNING", "57P02", true}, // crash restart; immediate shutdown before 14
		{"FATAL", "57P01", false},  // fast shutdown, or pg_terminate_backend
		{"FATAL", "57P05", false},  // idle_session_timeout
		{"NOTICE", "00000", false}, // any other notice
		{"FATAL", "57P03", false},  // cannot connect now: said on a new connection only
	} {
		n := &pgconn.Notice{SeverityUnlocalized: c.severity, Severity: "WARNUNG", Code: c.code}
		if got := goingDown(n); got != c.want {
			t.Errorf("%s %s: goingDown %v, want %v", c.severity, c.code, got, c.want)
		}
	}
}

// parkedNewest says whether the watch's parked connection to dsn's server
// started after the check's own one (both there).
func parkedNewest(t *testing.T, dsn string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var newer bool
	err = conn.QueryRow(ctx, `SELECT coalesce((SELECT max(backend_start) FROM pg_stat_activity WHERE application_name = 'healthswitch-sidecar-watch')
	    > (SELECT max(backend_start) FROM pg_stat_activity WHERE application_name = 'healthswitch-sidecar'), false)`).Scan(&newer)
	if err != nil {
		t.Fatal(err)
	}
	return newer
}
