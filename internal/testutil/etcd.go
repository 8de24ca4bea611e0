package testutil

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdCluster is a throwaway etcd cluster of the machine's own etcd binary
// (Debian etcd-server), every member on loopback at free ports with its data
// in a temp dir. Tests kill, restart and stop members to see what the code
// under test does meanwhile.
type EtcdCluster struct {
	t       testing.TB
	dir     string
	token   string
	tls     *tls.Config // of clients, when the members serve TLS
	Members []*EtcdMember
}

// EtcdTLS makes members serve clients over TLS with this certificate (valid
// for 127.0.0.1) and require client certificates signed by CA. Client is
// what the helper itself connects with.
type EtcdTLS struct {
	CertFile, KeyFile, CAFile string
	Client                    *tls.Config
}

// EtcdMember is one member of an EtcdCluster.
type EtcdMember struct {
	Name      string
	ClientURL string
	PeerURL   string
	dataDir   string
	args      []string
	log       *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been reaped
}

// etcdTiming makes elections take about half a second instead of several:
// tests kill leaders and wait for the next one.
var etcdTiming = []string{"--heartbeat-interval", "50", "--election-timeout", "500"}

// StartEtcd starts an n-member cluster and waits until every member is
// healthy. It is stopped (SIGKILL) and removed when the test ends.
func StartEtcd(t testing.TB, n int) *EtcdCluster {
	t.Helper()
	return StartEtcdTLS(t, n, nil)
}

// StartEtcdTLS is StartEtcd with client TLS when tc is not nil.
func StartEtcdTLS(t testing.TB, n int, tc *EtcdTLS) *EtcdCluster {
	t.Helper()
	Need(t, "etcd")
	dir, err := os.MkdirTemp("", "hs-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &EtcdCluster{t: t, dir: dir, token: fmt.Sprintf("hs-%d-%d", os.Getpid(), time.Now().UnixNano())}
	scheme := "http"
	if tc != nil {
		scheme, c.tls = "https", tc.Client
	}
	t.Cleanup(func() {
		c.StopAll()
		os.RemoveAll(dir)
	})
	var initial []string
	for i := range n {
		m := &EtcdMember{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			dataDir:   filepath.Join(dir, fmt.Sprintf("m%d", i)),
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = append([]string{
			"--name", m.Name, "--data-dir", m.dataDir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", c.token, "--logger", "zap", "--log-outputs", "stderr",
		}, etcdTiming...)
		if tc != nil {
			m.args = append(m.args, "--cert-file", tc.CertFile, "--key-file", tc.KeyFile,
				"--trusted-ca-file", tc.CAFile, "--client-cert-auth")
		}
		m.log, err = os.Create(filepath.Join(dir, m.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		c.start(m)
	}
	c.WaitHealthy(30 * time.Second)
	return c
}

// Endpoints are the client URLs of every member.
func (c *EtcdCluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

func (c *EtcdCluster) start(m *EtcdMember) {
	c.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return
	}
	cmd := exec.Command("etcd", m.args...)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("starting etcd %s: %v", m.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m.cmd, m.done = cmd, done
}

// Kill SIGKILLs member i and waits until it is gone.
func (c *EtcdCluster) Kill(i int) {
	m := c.Members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
	m.cmd = nil
}

// Restart starts member i again on its old data dir (it rejoins the cluster).
func (c *EtcdCluster) Restart(i int) { c.start(c.Members[i]) }

// StopAll kills every member.
func (c *EtcdCluster) StopAll() {
	for i := range c.Members {
		c.Kill(i)
	}
}

// StartAll starts every member that is not running and waits until the
// cluster is healthy.
func (c *EtcdCluster) StartAll() {
	for i := range c.Members {
		c.Restart(i)
	}
	c.WaitHealthy(30 * time.Second)
}

// Healthy reports whether member i answers /health with a leader.
func (c *EtcdCluster) Healthy(i int) bool {
	cl := http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: c.tls}}
	resp, err := cl.Get(c.Members[i].ClientURL + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitHealthy waits until every running member is healthy.
func (c *EtcdCluster) WaitHealthy(within time.Duration) {
	c.t.Helper()
	WaitFor(c.t, within, "every running etcd member healthy", func() bool {
		for i, m := range c.Members {
			m.mu.Lock()
			running := m.cmd != nil
			m.mu.Unlock()
			if running && !c.Healthy(i) {
				return false
			}
		}
		return true
	})
}

// Leader returns the index of the current leader, or -1 if no running
// member knows one.
func (c *EtcdCluster) Leader() int {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second, TLS: c.tls, Logger: zap.NewNop()})
	if err != nil {
		return -1
	}
	defer cli.Close()
	for i, m := range c.Members {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, m.ClientURL)
		cancel()
		if err != nil || st.Leader == 0 {
			continue
		}
		if st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}

// KillLeader finds the leader, kills it and returns its index.
func (c *EtcdCluster) KillLeader() int {
	c.t.Helper()
	leader := -1
	WaitFor(c.t, 10*time.Second, "an etcd leader", func() bool { leader = c.Leader(); return leader >= 0 })
	c.Kill(leader)
	return leader
}

// Client returns a client of the whole cluster, closed when the test ends.
func (c *EtcdCluster) Client() *clientv3.Client {
	c.t.Helper()
	return c.ClientAs("", "")
}

// ClientAs is Client authenticated as user (etcd auth), closed when the
// test ends.
func (c *EtcdCluster) ClientAs(user, password string) *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, TLS: c.tls,
		Username: user, Password: password, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}
