package demo

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePort hands out ports below the kernel's ephemeral range, never the
// same one twice, each one a server can then bind for TCP and UDP.
func TestFreePortBelowEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip("no ip_local_port_range:", err)
	}
	ephemeral, _ := strconv.Atoi(strings.Fields(string(b))[0])
	seen := map[int]bool{}
	for range 50 {
		p, err := FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if p < 20000 || p >= ephemeral {
			t.Fatalf("port %d: outside [20000, %d)", p, ephemeral)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		u.Close()
	}
}
