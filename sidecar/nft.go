package sidecar

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/google/nftables"
)

// netnsPath turns a `netns` option into a path: a bare name is one made by
// `ip netns add` (/var/run/netns/NAME), anything with a slash is taken as is
// (/proc/PID/ns/net). Empty means the sidecar's own namespace.
func netnsPath(netns string) string {
	if netns == "" || filepath.IsAbs(netns) {
		return netns
	}
	return filepath.Join("/var/run/netns", netns)
}

// nftConn opens a netlink connection to nftables in the network namespace
// netns ("" for ours). lasting keeps one socket for several requests. The
// returned close releases the socket and the namespace handle.
func nftConn(netns string, lasting bool) (*nftables.Conn, func(), error) {
	var opts []nftables.ConnOption
	var ns *os.File
	if p := netnsPath(netns); p != "" {
		f, err := os.Open(p)
		if err != nil {
			return nil, nil, fmt.Errorf("netns %s: %w", netns, err)
		}
		ns = f
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	if lasting {
		opts = append(opts, nftables.AsLasting())
	}
	conn, err := nftables.New(opts...)
	closeAll := func() {
		if conn != nil && lasting {
			_ = conn.CloseLasting()
		}
		if ns != nil {
			_ = ns.Close()
		}
	}
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("nftables netlink: %w", err)
	}
	return conn, closeAll, nil
}

// nftReader reads a namespace's nftables ruleset over one netlink socket
// kept between runs. Closing a netlink socket waits for an nftables commit
// in progress to finish (the kernel takes the commit lock to release what
// the socket owned), so a socket opened and closed per run would make the
// run that a commit's event woke wait for that commit's tail: milliseconds
// after the change was already live.
type nftReader struct {
	netns string
	mu    sync.Mutex
	conn  *nftables.Conn
	done  func()
	ns    uint64        // the namespace's inode when conn was opened: a socket stays in its namespace
	moved chan struct{} // told when the namespace was found made again, for the watch
}

func newNFTReader(netns string) *nftReader {
	return &nftReader{netns: netns, moved: make(chan struct{}, 1)}
}

// count counts the tables of the ruleset accepted by keep (nil: all) and
// the rules inside their chains: what `nft list ruleset` shows, without
// forking nft. On an error the socket is dropped; the next run opens a new
// one.
func (r *nftReader) count(keep func(*nftables.Table) bool) (tables, rules int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ns uint64
	if p := netnsPath(r.netns); p != "" {
		// The name may now stand for another namespace (deleted and made
		// again): the kept socket would go on reading the old one.
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			r.closeLocked()
			return 0, 0, fmt.Errorf("netns %s: %w", r.netns, err)
		}
		if ns = st.Ino; r.conn != nil && ns != r.ns {
			r.closeLocked()
			signal(r.moved)
		}
	}
	if r.conn == nil {
		if r.conn, r.done, err = nftConn(r.netns, true); err != nil {
			return 0, 0, err
		}
		r.ns = ns
	}
	if tables, rules, err = nftCount(r.conn, keep); err != nil {
		r.closeLocked()
	}
	return tables, rules, err
}

func nftCount(conn *nftables.Conn, keep func(*nftables.Table) bool) (tables, rules int, err error) {
	ts, err := conn.ListTables()
	if err != nil {
		return 0, 0, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range ts {
		if keep == nil || keep(t) {
			tables++
		}
	}
	if tables == 0 {
		return 0, 0, nil
	}
	chains, err := conn.ListChains()
	if err != nil {
		return 0, 0, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if keep != nil && !keep(ch.Table) {
			continue
		}
		rs, err := conn.GetRules(ch.Table, ch)
		if err != nil {
			return 0, 0, fmt.Errorf("rules of chain %s %s: %w", ch.Table.Name, ch.Name, err)
		}
		rules += len(rs)
	}
	return tables, rules, nil
}

func (r *nftReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeLocked()
}

func (r *nftReader) closeLocked() {
	if r.done != nil {
		r.done()
	}
	r.conn, r.done = nil, nil
}

// watchNFT is the nftables event source (also iptables' nf_tables backend):
// the netlink NFNLGRP_NFTABLES group, one wake per committed generation, so
// a flush of a hundred rules runs the check once. Every object kind is
// subscribed and none filtered by the library: google/nftables v0.3.0's
// WithMonitorObject filter delivers nothing (an operator-precedence bug), so
// any change of the ruleset wakes the check, which decides. When the
// library ends the subscription (a receive error closes its channel) the
// watch subscribes again and wakes the check, which re-reads the ruleset:
// changes missed in between are not lost.
func watchNFT(ctx context.Context, c *Check, r *nftReader, wake func()) error {
	sub, err := nftSubscribe(r.netns)
	if err != nil {
		return err // cannot start: the caller polls
	}
	traced(c, "nftables monitor")
	backoff := watchBackoff(c, connBackoff)
	for {
		select {
		case <-ctx.Done():
			sub.close()
			return nil
		case <-r.moved: // the check found the namespace made again: this subscription is to the old one
		case gen, ok := <-sub.events:
			if ok && (gen.GeneratedBy == nil || gen.GeneratedBy.Error == nil) {
				backoff.reset()
				wake()
				continue
			}
			// The library ended the subscription (a receive error).
		}
		sub.close()
		wake() // look again now
		for {
			if !backoff.wait(ctx) {
				return nil
			}
			if sub, err = nftSubscribe(r.netns); err == nil {
				traced(c, "nftables monitor")
				wake() // relist: whatever changed while unsubscribed
				break
			}
		}
	}
}

// nftSub is one subscription to a namespace's nftables monitor.
type nftSub struct {
	events chan *nftables.MonitorEvents
	mon    *nftables.Monitor
	done   func()
}

func nftSubscribe(netns string) (*nftSub, error) {
	conn, done, err := nftConn(netns, false)
	if err != nil {
		return nil, err
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(16))
	events, err := conn.AddGenerationalMonitor(mon)
	if err != nil {
		done()
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	return &nftSub{events, mon, done}, nil
}

// close ends the subscription and lets the library's goroutine finish its
// send and exit.
func (s *nftSub) close() {
	s.mon.Close()
	for range s.events {
	}
	s.done()
}
