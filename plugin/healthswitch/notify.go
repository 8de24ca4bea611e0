package healthswitch

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/internal/sender"
	"github.com/healthswitch/healthswitch/report"
)

const hookTimeout = 10 * time.Second

// hook is an on_down/on_up action, as parsed: a URL to POST the event to, or
// an argv to run (no shell).
type hook struct {
	url  string
	argv []string
}

func (k *hook) String() string {
	if k.url != "" {
		return k.url
	}
	return strings.Join(k.argv, " ")
}

// notifyChange tells a cluster's ingress, and runs its hooks, when this
// server stops or resumes sending it traffic. Called with mu held; it only
// queues, never waits.
func (e *engine) notifyChange(ev Event) {
	cs := e.clusters[ev.Cluster]
	var action string
	var hk *hook
	switch {
	case ev.To == StateUp:
		action, hk = report.ActionResume, cs.cfg.onUp
	case ev.From == StateUp || ev.From == StateUnknown:
		action, hk = report.ActionStop, cs.cfg.onDown
	default:
		return // down <-> drained: traffic was already stopped
	}
	if cs.cfg.onDown != nil || cs.cfg.onUp != nil {
		// One key per cluster for both hooks: they run in order, and a newer
		// transition replaces one not yet run, so the hook of the state the
		// cluster ends in always runs last. A transition without a hook
		// still supersedes a pending one.
		e.send.Send(hookKey(cs.cfg.name), hookMessage(hk, cs.cfg.name, action, ev))
	}
	if len(cs.cfg.notify) == 0 {
		return
	}
	body, _ := json.Marshal(report.Notification{Version: report.Version, Cluster: cs.cfg.name,
		Action: action, Reason: ev.Reason, Epoch: ev.Epoch, At: ev.AppliedAt.UTC()})
	sign := signWith(cs.cfg.key)
	for _, u := range cs.cfg.notify {
		e.send.Send(notifyKey(cs.cfg.name, u), sender.Message{URL: u, Body: body, Sign: sign})
	}
}

// hookMessage makes the delivery of a hook: a URL gets the event as a JSON
// POST, a command runs with HEALTHSWITCH_* variables. A nil hook does
// nothing (it only supersedes).
func hookMessage(hk *hook, cluster, action string, ev Event) sender.Message {
	switch {
	case hk == nil:
		return sender.Message{Run: func(context.Context) error { return nil }}
	case hk.url != "":
		body, _ := json.Marshal(ev)
		return sender.Message{URL: hk.url, Body: body, Timeout: hookTimeout}
	}
	argv := hk.argv
	return sender.Message{Timeout: hookTimeout, Run: func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(cmd.Environ(), "HEALTHSWITCH_CLUSTER="+cluster, "HEALTHSWITCH_ACTION="+action,
			"HEALTHSWITCH_STATE="+string(ev.To), "HEALTHSWITCH_REASON="+ev.Reason)
		return cmd.Run()
	}}
}

// signWith signs each attempt with key as it leaves.
func signWith(key []byte) func(*http.Request, time.Time, []byte) {
	return func(req *http.Request, now time.Time, body []byte) { report.SignRequest(req, key, now, body) }
}

// forward passes an accepted report to every peer as it came, marked so it
// is not passed on again. Per peer and cluster only the newest is kept.
func (e *engine) forward(cluster string, body []byte, ts, sig string) {
	if len(e.cfg.peers) == 0 {
		return
	}
	hdr := http.Header{}
	hdr.Set(report.HeaderTimestamp, ts)
	hdr.Set(report.HeaderSignature, sig)
	hdr.Set(report.HeaderForwarded, "1")
	for _, p := range e.cfg.peers {
		e.send.Send(peerKey(p, "report", cluster), sender.Message{URL: p + "/v1/report", Body: body, Header: hdr})
	}
}

// forwardDrain passes an operator drain to the peers, signed anew with the
// admin key at each attempt.
func (e *engine) forwardDrain(cluster string, drain bool, body []byte) {
	if len(e.cfg.peers) == 0 || len(e.cfg.adminKeys) == 0 {
		return
	}
	verb := "undrain"
	if drain {
		verb = "drain"
	}
	hdr := http.Header{}
	hdr.Set(report.HeaderForwarded, "1")
	sign := signWith(e.cfg.adminKeys[0])
	for _, p := range e.cfg.peers {
		e.send.Send(peerKey(p, "drain", cluster), sender.Message{URL: p + "/v1/clusters/" + cluster + "/" + verb, Body: body, Header: hdr, Sign: sign})
	}
}
