package sidecar

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// startTraced starts a source like startWatch and waits until it says it
// is established (traced as what), so no change made next can be missed.
func startTraced(t *testing.T, source func(context.Context, *Check, func()) error, c *Check, what string) *watch {
	t.Helper()
	seen := traceSources(t)
	w := startWatch(t, source, c)
	testutil.WaitFor(t, 5*time.Second, "the "+what+" to start", func() bool { return seen(what) > 0 })
	return w
}

// after waits until the watch has woken more than n times in total.
func (w *watch) after(t *testing.T, n int64, what string) {
	t.Helper()
	testutil.WaitFor(t, 2*time.Second, what, func() bool { return w.wakes.Load() > n })
}

// nsName is the name of a namespace made by netns (the last word of its
// `ip netns exec NAME` prefix).
func nsName(ns []string) string { return ns[len(ns)-1] }

func TestNFTablesNativeAndWatch(t *testing.T) {
	testutil.Need(t, "nft")
	ns := netns(t)
	c := newCheck(t, "preset: nftables\nnftables: {min_rules: 1, netns: "+nsName(ns)+"}\ninterval: 5s")
	expect(t, c, false, "nftables ruleset is empty")
	w := startTraced(t, watchNFTables, c, "nftables monitor")

	inNS(t, ns, "nft", "add table inet hs")
	inNS(t, ns, "nft", "add chain inet hs input { type filter hook input priority 0; policy accept; }")
	inNS(t, ns, "nft", "add rule inet hs input tcp dport 22 accept")
	inNS(t, ns, "nft", "add rule inet hs input tcp dport 80 accept")
	w.after(t, 0, "a wake after rules were added")
	expect(t, c, true, "1 tables, 2 rules")

	n := w.wakes.Load()
	inNS(t, ns, "nft", "delete rule inet hs input handle 2")
	w.after(t, n, "a wake after a rule was deleted")
	expect(t, c, true, "1 tables, 1 rules")

	n = w.wakes.Load()
	inNS(t, ns, "nft", "flush ruleset")
	w.after(t, n, "a wake after the ruleset was flushed")
	expect(t, c, false, "nftables ruleset is empty")

	n = w.wakes.Load()
	inNS(t, ns, "nft", "add table inet hs")
	inNS(t, ns, "nft", "add chain inet hs input { type filter hook input priority 0; policy accept; }")
	inNS(t, ns, "nft", "add rule inet hs input tcp dport 22 accept")
	w.after(t, n, "a wake after the rules came back")
	expect(t, c, true, "1 tables, 1 rules")
}

func TestIPTablesNFTWatch(t *testing.T) {
	testutil.Need(t, "iptables-nft", "nsenter")
	ns := netns(t)
	// iptables-nft: the nf_tables backend, whose changes are nftables commits.
	c := newCheck(t, "preset: iptables\niptables: {netns: "+nsName(ns)+", command: [nsenter, --net=/var/run/netns/"+nsName(ns)+", iptables-nft, -S]}\ninterval: 5s")
	expect(t, c, false, "0 iptables rules, want at least 1")
	w := startTraced(t, watchIPTables, c, "nftables monitor")
	inNS(t, ns, "iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	w.after(t, 0, "a wake after iptables-nft -A")
	expect(t, c, true, "1 rules")
	n := w.wakes.Load()
	inNS(t, ns, "iptables-nft", "-F")
	w.after(t, n, "a wake after iptables-nft -F")
	expect(t, c, false, "0 iptables rules")
}

// Without a command, the iptables preset reads the filter table over
// netlink when iptables is the nf_tables backend (asked once: no fork
// after the first run), counting what `iptables -S` counts; with the legacy
// backend it forks `iptables -S`.
func TestIPTablesNativeRead(t *testing.T) {
	testutil.Need(t, "iptables-nft", "iptables-legacy", "nsenter")
	ns := netns(t)
	nftBin := programs(t, map[string]string{"iptables": "iptables-nft"})
	c := newCheck(t, "preset: iptables\niptables: {netns: "+nsName(ns)+"}\ninterval: 5s")
	t.Cleanup(c.Close)
	onPath(t, nftBin, func() { expect(t, c, false, "0 iptables rules, want at least 1") })
	inNS(t, ns, "iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	inNS(t, ns, "iptables-nft", "-N", "mine")
	inNS(t, ns, "iptables-nft", "-A", "mine", "-j", "DROP")
	inNS(t, ns, "iptables-nft", "-A", "INPUT", "-j", "mine")
	inNS(t, ns, "iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE") // not in iptables -S
	out, err := exec.Command(ns[0], append(ns[1:], "iptables-nft", "-S")...).Output()
	if err != nil {
		t.Fatal(err)
	}
	if n := countPrefixed(out, "-A "); n != 3 {
		t.Fatalf("iptables-nft -S lists %d rules, want 3:\n%s", n, out)
	}
	onPath(t, t.TempDir(), func() { expect(t, c, true, "3 rules") })
	inNS(t, ns, "iptables-nft", "-F")
	onPath(t, t.TempDir(), func() { expect(t, c, false, "0 iptables rules") })

	// The legacy backend keeps its rules outside nftables: forked, and the
	// nf_tables rules beside them are not counted.
	inNS(t, ns, "iptables-nft", "-A", "INPUT", "-j", "ACCEPT")
	inNS(t, ns, "iptables-legacy", "-A", "INPUT", "-j", "DROP")
	inNS(t, ns, "iptables-legacy", "-A", "INPUT", "-j", "ACCEPT")
	t.Cleanup(func() { exec.Command(ns[0], append(ns[1:], "iptables-legacy", "-F")...).Run() })
	legacy := newCheck(t, "preset: iptables\niptables: {netns: "+nsName(ns)+"}\ninterval: 5s")
	t.Cleanup(legacy.Close)
	onPath(t, programs(t, map[string]string{"iptables": "iptables-legacy", "nsenter": "nsenter"}), func() { expect(t, legacy, true, "2 rules") })
}

func TestIPTablesLegacyHasNoEvents(t *testing.T) {
	testutil.Need(t, "iptables-legacy")
	c := newCheck(t, "preset: iptables\niptables: {command: [iptables-legacy, -S]}\ninterval: 5s")
	err := watchIPTables(context.Background(), c, func() {})
	if !errors.Is(err, errCannotWatch) {
		t.Fatalf("watch of legacy iptables = %v, want errCannotWatch (poll instead)", err)
	}
}

func TestNFTablesWatchCannotStart(t *testing.T) {
	c := newCheck(t, "preset: nftables\nnftables: {netns: hs-no-such-namespace}\ninterval: 5s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := watchNFTables(ctx, c, func() {}); err == nil || ctx.Err() != nil {
		t.Fatalf("watch in a missing namespace = %v (ctx %v), want an error at once", err, ctx.Err())
	}
	expect(t, c, false, "netns hs-no-such-namespace")
}

// The native read and `nft list ruleset` agree on what they count.
func TestNFTablesNativeMatchesCommand(t *testing.T) {
	testutil.Need(t, "nft")
	ns := netns(t)
	inNS(t, ns, "nft", "add table ip a")
	inNS(t, ns, "nft", "add chain ip a c1 { type filter hook input priority 0; }")
	inNS(t, ns, "nft", "add rule ip a c1 counter")
	inNS(t, ns, "nft", "add table inet b")
	inNS(t, ns, "nft", "add chain inet b c2")
	inNS(t, ns, "nft", "add rule inet b c2 ip saddr 10.0.0.1 drop")
	inNS(t, ns, "nft", "add rule inet b c2 tcp dport { 80, 443 } accept")
	out, err := exec.Command(ns[0], append(ns[1:], "nft", "list", "ruleset")...).Output()
	if err != nil {
		t.Fatal(err)
	}
	wt, wr := countNFT(out)
	r := newNFTReader(nsName(ns))
	defer r.close()
	gt, gr, err := r.count(nil)
	if err != nil || gt != wt || gr != wr {
		t.Fatalf("native: %d tables %d rules (%v); nft: %d tables %d rules", gt, gr, err, wt, wr)
	}
}

// A namespace deleted and made again under the same name is read anew: the
// socket kept between runs stays in the namespace it was opened in. The run
// that finds it made again tells the watch, which subscribes to the new
// one: a change there then wakes the check.
func TestNFTablesNamespaceMadeAgain(t *testing.T) {
	testutil.Need(t, "nft")
	ns := netns(t)
	inNS(t, ns, "nft", "add table inet hs")
	c := newCheck(t, "preset: nftables\nnftables: {netns: "+nsName(ns)+"}\ninterval: 5s")
	t.Cleanup(c.Close)
	expect(t, c, true, "1 tables")
	monitors := traceSources(t)
	w := startWatch(t, watchNFTables, c)
	testutil.WaitFor(t, 5*time.Second, "the monitor", func() bool { return monitors("nftables monitor") == 1 })
	for _, args := range [][]string{{"netns", "delete", nsName(ns)}, {"netns", "add", nsName(ns)}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	expect(t, c, false, "nftables ruleset is empty")
	testutil.WaitFor(t, 5*time.Second, "the monitor subscribed in the new namespace", func() bool { return monitors("nftables monitor") == 2 })
	n := w.wakes.Load()
	inNS(t, ns, "nft", "add table inet again")
	w.after(t, n, "a wake after a change in the new namespace")
	expect(t, c, true, "1 tables")

	if out, err := exec.Command("ip", "netns", "delete", nsName(ns)).CombinedOutput(); err != nil {
		t.Fatalf("ip netns delete: %v %s", err, out)
	}
	expect(t, c, false, "netns "+nsName(ns))
	exec.Command("ip", "netns", "add", nsName(ns)).Run() // for the cleanup's delete
}
