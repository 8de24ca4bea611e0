package testutil

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// HAProxy is a throwaway HAProxy (Debian's haproxy, run in the foreground)
// in mode tcp: Front is a frontend on a free loopback port whose backend
// "web" has servers s1, s2, ... (one per address given), and Socket its
// runtime API (`stats socket ... level admin`) in a temp dir; the same API
// listens on TCP at AdminAddr too.
type HAProxy struct {
	Front, Socket, AdminAddr string
}

// StartHAProxy starts it, waits for its socket, and stops it at cleanup
// (showing its output when the test failed).
func StartHAProxy(t testing.TB, servers ...string) *HAProxy {
	t.Helper()
	Need(t, "haproxy")
	dir := t.TempDir()
	h := &HAProxy{Front: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), Socket: filepath.Join(dir, "admin.sock"),
		AdminAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	var lines strings.Builder
	for i, s := range servers {
		fmt.Fprintf(&lines, "    server s%d %s\n", i+1, s)
	}
	cfg := fmt.Sprintf(`global
    stats socket %s mode 600 level admin
    stats socket ipv4@%s level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend fe
    bind %s
    default_backend web
backend web
    balance roundrobin
%s`, h.Socket, h.AdminAddr, h.Front, lines.String())
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	StartLogged(t, "haproxy", exec.Command("haproxy", "-f", path, "-db"))
	WaitFor(t, 5*time.Second, "haproxy's stats socket", func() bool {
		_, err := h.Command("show info")
		return err == nil
	})
	return h
}

// Command runs one line on the runtime API and returns the answer. It is
// the tests' own reading of the socket, independent of the sidecar's.
func (h *HAProxy) Command(line string) (string, error) {
	conn, err := net.DialTimeout("unix", h.Socket, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}

// Statuses is the status column of `show stat` for backend web's servers,
// "s1=DRAIN s2=no check" ("no check": ready, without a health check).
func (h *HAProxy) Statuses(t testing.TB) string {
	t.Helper()
	out, err := h.Command("show stat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	col := map[string]int{}
	for i, c := range header {
		col[c] = i
	}
	var st []string
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) < len(header) || f[col["pxname"]] != "web" || f[col["svname"]] == "BACKEND" {
			continue
		}
		st = append(st, f[col["svname"]]+"="+f[col["status"]])
	}
	return strings.Join(st, " ")
}
