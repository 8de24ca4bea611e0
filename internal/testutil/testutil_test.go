package testutil

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// recorder is a testing.TB that records skips and failures instead of
// acting on them, so Need's decisions can be checked without skipping the
// test that checks them.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	if r.failed == "" { // a real Fatalf never returns
		r.skipped = fmt.Sprint(args...)
	}
}
func (r *recorder) Fatalf(f string, args ...any) { r.failed = fmt.Sprintf(f, args...) }

func TestNeed(t *testing.T) {
	cases := []struct {
		name, program, requireAll string
		wantSkip, wantFail        bool
	}{
		{"present", "sh", "", false, false},
		{"present, CI", "sh", "1", false, false},
		{"missing", "healthswitch-no-such-program", "", true, false},
		{"missing, CI", "healthswitch-no-such-program", "1", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(RequireAllEnv, tc.requireAll)
			r := &recorder{TB: t}
			Need(r, tc.program)
			if (r.skipped != "") != tc.wantSkip || (r.failed != "") != tc.wantFail {
				t.Fatalf("skipped=%q failed=%q; want skip %v, fail %v", r.skipped, r.failed, tc.wantSkip, tc.wantFail)
			}
			if tc.wantSkip && !strings.Contains(r.skipped, tc.program) {
				t.Errorf("skip message %q does not name %s", r.skipped, tc.program)
			}
		})
	}
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
