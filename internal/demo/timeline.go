package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Timeline is one measured switch: a fault (or its repair) and the moments
// each part of the system reacted, as offsets from the injection.
type Timeline struct {
	Title    string
	Action   string // what was done at offset 0; default "fault injected"
	Injected time.Time
	Event    Event     // the DNS server's transition
	SawAt    time.Time // the first client query that saw the new answer returned
	SawWhat  string
	Queries  int // client queries sent until then
}

// Switch measures one switch: it queries name in a tight, bounded loop,
// calls inject, and waits until a query answers what done accepts and the
// DNS server has recorded a transition of cluster to state to.
func Switch(ctx context.Context, api string, r *Resolver, name, cluster, to string, inject func(), done func(answer string) bool) (Timeline, error) {
	w := &EventWatcher{API: api}
	if err := w.Skip(); err != nil {
		return Timeline{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	type seen struct {
		at      time.Time
		answer  string
		queries int
	}
	start := make(chan time.Time)
	found := make(chan seen, 1)
	go func() {
		t0 := <-start
		n := 0
		for ctx.Err() == nil {
			ans := r.Answer(name)
			at := time.Now()
			n++
			if at.After(t0) && done(ans) {
				found <- seen{at, ans, n}
				return
			}
			// Bounded rate: at most a few thousand queries a second.
			time.Sleep(200 * time.Microsecond)
		}
	}()

	tl := Timeline{Injected: time.Now()}
	inject()
	start <- tl.Injected

	var sawClient, sawEvent bool
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !sawClient || !sawEvent {
		select {
		case s := <-found:
			tl.SawAt, tl.SawWhat, tl.Queries, sawClient = s.at, s.answer, s.queries, true
		case <-tick.C:
			if sawEvent {
				continue
			}
			evs, err := w.Poll()
			if err != nil {
				continue
			}
			for _, e := range evs {
				if e.Cluster == cluster && e.To == to {
					tl.Event, sawEvent = e, true
					break
				}
			}
		case <-ctx.Done():
			return tl, fmt.Errorf("%s: client saw the change: %t, server recorded it: %t: %w", name, sawClient, sawEvent, ctx.Err())
		}
	}
	return tl, nil
}

// Offset is t relative to the injection, in milliseconds.
func (tl *Timeline) Offset(t time.Time) float64 {
	return float64(t.Sub(tl.Injected).Microseconds()) / 1000
}

// Print writes the timeline as aligned lines with millisecond offsets.
func (tl *Timeline) Print(w io.Writer, name string) {
	fmt.Fprintf(w, "%s\n", tl.Title)
	line := func(t time.Time, what, note string) {
		if t.IsZero() {
			fmt.Fprintf(w, "  %10s  %-30s %s\n", "-", what, note)
			return
		}
		fmt.Fprintf(w, "  %+8.1f ms  %-30s %s\n", tl.Offset(t), what, note)
	}
	e := tl.Event
	action := tl.Action
	if action == "" {
		action = "fault injected"
	}
	line(tl.Injected, action, "")
	line(e.ObservedAt, "detected in the cluster", "(observed_at: when the check that saw it ran)")
	line(e.ReceivedAt, "report received", "(received_at, by the DNS server)")
	line(e.AppliedAt, "answer changed", fmt.Sprintf("(applied_at, epoch %d: %s → %s, %s)", e.Epoch, e.From, e.To, e.Reason))
	line(tl.SawAt, "first client query saw it", fmt.Sprintf("(%s → %s, query %d of the loop)", name, orNone(tl.SawWhat), tl.Queries))
}

func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return "(no address)"
	}
	return s
}
