package sidecar

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// What the event sources of the mysql, redis and grpc kinds share: each holds
// one connection to the server and wakes the check when it breaks (or the
// server says something changed), then holds a new one.

// Backoff between attempts to hold a new connection once one broke or could
// not open.
const (
	holdBackoffMin = 25 * time.Millisecond
	holdBackoffMax = time.Second
)

// errNoSource marks a server that cannot be watched this way at all (a gRPC
// server without Watch): the watch gives up and the check is polled.
type errNoSource struct{ err error }

func (e errNoSource) Error() string { return "no event source: " + e.err.Error() }
func (e errNoSource) Unwrap() error { return e.err }

// holdLoop runs session until ctx is done. session holds one connection and
// returns why it ended; it calls ready once the connection is established.
// The check is woken whenever what the watch sees may have changed: a held
// connection breaks, the first attempt after a break fails (the server went
// away while the watch was between connections), and a connection opens,
// but for the very first (the server is back). It returns an errNoSource from session at
// once, and ctx.Err() at shutdown.
func holdLoop(ctx context.Context, wake func(), session func(ctx context.Context, ready func()) error) error {
	backoff := holdBackoffMin
	reachable := true // what the last attempt found; the check starts assuming so
	for first := true; ; first = false {
		established := false
		err := session(ctx, func() {
			established, backoff = true, holdBackoffMin
			if !first {
				wake()
			}
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ns := (errNoSource{}); errors.As(err, &ns) {
			return err
		}
		if established || reachable {
			wake()
		}
		reachable = established
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, holdBackoffMax)
	}
}

// redactedError shows err's text with every secret replaced, so a password
// never reaches a report, /status or a log; errors.Is/As still see err.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr hides secrets (passwords) in err's text; a nil err stays nil.
func redactErr(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return &redactedError{err: err, msg: msg}
}

// validShare fills a share limit's default and checks it is in (0, 1].
func validShare(name string, v *float64, def float64) error {
	if *v == 0 {
		*v = def
	}
	if *v < 0 || *v > 1 {
		return fmt.Errorf("%s %g: must be in (0, 1]", name, *v)
	}
	return nil
}

// validAddress checks a required host:port.
func validAddress(addr string) error {
	if addr == "" {
		return errors.New("address: required (host:port)")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	return nil
}

// loadRoots reads the PEM roots a TLS check verifies its server with.
func loadRoots(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", caFile)
	}
	return roots, nil
}
