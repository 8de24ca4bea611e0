package sidecar

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// DefaultLibvirtSocket is where libvirtd listens on a node.
const DefaultLibvirtSocket = "/var/run/libvirt/libvirt-sock"

// libvirtTarget maps a libvirt URI to the daemon socket to dial and the URI
// to open through it: qemu:///system → the default socket, qemu:///system;
// test+unix:///default?socket=/run/x → /run/x, test:///default. A URI with a
// host or a remote transport (ssh, tls, tcp) has no local daemon socket,
// plain test:///default runs inside the client, and a session URI's socket
// is the user's (unless ?socket= names it): none is read natively or
// watched here; the vm preset forks virsh for them.
func libvirtTarget(raw string) (sock, open string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("libvirt uri %q: %w", raw, err)
	}
	driver, transport, _ := strings.Cut(u.Scheme, "+")
	switch {
	case u.Host != "" || (transport != "" && transport != "unix"):
		return "", "", fmt.Errorf("%w: libvirt uri %q is remote (events need the local daemon socket)", errCannotWatch, raw)
	case driver == "test" && transport == "":
		return "", "", fmt.Errorf("%w: %q runs in the client; use test+unix:// to reach the daemon", errCannotWatch, raw)
	}
	sock = u.Query().Get("socket")
	if sock == "" && u.Path == "/session" {
		return "", "", fmt.Errorf("%w: %q is a per-user session daemon; give its socket with ?socket=", errCannotWatch, raw)
	}
	if sock == "" {
		sock = DefaultLibvirtSocket
		// Modular daemons (virtqemud, virtlxcd…, libvirt ≥ 5.6) take a
		// driver's URIs where they run, as libvirt's own client does.
		if modular := filepath.Join(filepath.Dir(DefaultLibvirtSocket), "virt"+driver+"d-sock"); exists(modular) {
			sock = modular
		}
	}
	return sock, driver + "://" + u.Path, nil
}

// watchVM is the vm preset's event source: libvirt domain lifecycle events
// (started, stopped, crashed, destroyed...) from libvirtd over its unix
// socket, through go-libvirt (pure Go). When the daemon goes away the watch
// wakes the check (its read then fails: down) and reconnects with backoff;
// after it reconnects it wakes the check again, which relists.
func watchVM(ctx context.Context, c *Check, wake func()) error {
	sock, open, err := libvirtTarget(c.VM.URI)
	if err != nil {
		return err
	}
	lv, events, err := libvirtSubscribe(ctx, sock, open, c.timeout)
	if err != nil {
		return err
	}
	traced(c, "libvirt events")
	backoff := watchBackoff(c, connBackoff)
	for {
		select {
		case <-ctx.Done():
			libvirtClose(lv, events)
			return nil
		case ev, ok := <-events:
			if ok {
				if len(c.VM.Domains) == 0 || slices.Contains(c.VM.Domains, ev.Dom.Name) {
					wake()
				}
				continue
			}
			libvirtClose(lv, nil)
			wake() // the daemon went away: look now
			for {
				if !backoff.wait(ctx) {
					return nil
				}
				if lv, events, err = libvirtSubscribe(ctx, sock, open, c.timeout); err == nil {
					backoff.reset()
					traced(c, "libvirt events")
					wake() // back: relist whatever changed meanwhile
					break
				}
			}
		}
	}
}

func libvirtSubscribe(ctx context.Context, sock, open string, timeout time.Duration) (*libvirt.Libvirt, <-chan libvirt.DomainEventLifecycleMsg, error) {
	lv, err := libvirtConnect(sock, open, timeout)
	if err != nil {
		return nil, nil, err
	}
	events, err := lv.LifecycleEvents(ctx)
	if err != nil {
		_ = lv.Disconnect()
		return nil, nil, fmt.Errorf("libvirt lifecycle events: %w", err)
	}
	return lv, events, nil
}

// libvirtConnect dials the daemon socket and opens the URI through it.
func libvirtConnect(sock, open string, timeout time.Duration) (*libvirt.Libvirt, error) {
	lv := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(sock), dialers.WithLocalTimeout(timeout)))
	if err := lv.ConnectToURI(libvirt.ConnectURI(open)); err != nil {
		return nil, fmt.Errorf("libvirt %s via %s: %w", open, sock, err)
	}
	return lv, nil
}

// libvirtClose disconnects and drains events, so go-libvirt's sender,
// which does not select on its context, can finish and exit.
func libvirtClose(lv *libvirt.Libvirt, events <-chan libvirt.DomainEventLifecycleMsg) {
	_ = lv.Disconnect()
	if events == nil {
		return
	}
	for range events {
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
