package testutil

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a server process a test kills and starts again (MariaDB, Redis).
type proc struct {
	t      testing.TB
	argv   []string
	log    string       // the server's log file, shown when it will not start
	ready  func() error // nil once the server serves
	within time.Duration

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts the server (again) and waits until it is ready.
func (p *proc) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(p.exited)
	deadline := time.Now().Add(p.within)
	for {
		err := p.ready()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(p.log)
			p.t.Fatalf("%s exited: %s", p.argv[0], log)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready within %s: %v", p.argv[0], p.within, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: the kernel closes every connection at
// once, as when a host dies) and waits for it to exit.
func (p *proc) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}
