package sidecar

// TEMPORARY: the events branch defines these in sidecar/watch.go with the
// same API; this file goes at the merge.

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

type backoff struct {
	lo, hi, cur time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff { return &backoff{lo: lo, hi: hi} }

func (b *backoff) wait(ctx context.Context) bool {
	if b.cur == 0 {
		b.cur = b.lo
	} else {
		b.cur = min(2*b.cur, b.hi)
	}
	d := b.cur/2 + rand.N(b.cur/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.cur = 0 }

func watchBackoff(c *Check) *backoff {
	return newBackoff(5*time.Millisecond, min(max(c.interval, 5*time.Millisecond), time.Second))
}

var errCannotWatch = errors.New("event source cannot start")
