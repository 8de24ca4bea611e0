package healthswitch

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/healthswitch/healthswitch/report"
)

// startOutboxes creates the notify and peer senders. Called from
// startBackground with mu held.
func (e *engine) startOutboxes() {
	e.client = &http.Client{Timeout: 2 * time.Second}
	for _, cs := range e.clusters {
		for _, u := range cs.cfg.notify {
			cs.notify = append(cs.notify, newOutbox(u, "notify", 1, e.client, e.done))
		}
		if cs.cfg.onDown != "" || cs.cfg.onUp != "" {
			cs.hooks = make(chan hookJob, 16)
			go runHooks(cs.hooks, e.done)
		}
	}
	for _, p := range e.cfg.peers {
		e.peers = append(e.peers, newOutbox(strings.TrimSuffix(p, "/"), "peer", 256, e.client, e.done))
	}
	e.onChange = append(e.onChange, e.notifyChange)
}

// notifyChange tells a cluster's ingress, and runs its hooks, when this
// server stops or resumes sending it traffic. Called with mu held.
func (e *engine) notifyChange(cs *clusterState, ev Event) {
	var action, hook string
	switch {
	case ev.To == StateUp:
		action, hook = report.ActionResume, cs.cfg.onUp
	case ev.From == StateUp || ev.From == StateUnknown:
		action, hook = report.ActionStop, cs.cfg.onDown
	default:
		return // down <-> drained: traffic was already stopped
	}
	if hook != "" && cs.hooks != nil {
		select {
		case cs.hooks <- hookJob{hook: hook, cluster: cs.cfg.name, action: action, ev: ev}:
		default:
			notifications.WithLabelValues("hook", "dropped").Inc()
		}
	}
	if len(cs.notify) == 0 {
		return
	}
	body, _ := json.Marshal(report.Notification{Version: report.Version, Cluster: cs.cfg.name,
		Action: action, Reason: ev.Reason, Epoch: ev.Epoch, At: ev.AppliedAt.UTC()})
	hdr := http.Header{}
	ts, sig := report.Sign(cs.cfg.key, e.now(), body)
	hdr.Set(report.HeaderTimestamp, ts)
	hdr.Set(report.HeaderSignature, sig)
	for _, o := range cs.notify {
		o.send(message{body: body, hdr: hdr})
	}
}

const hookTimeout = 10 * time.Second

type hookJob struct {
	hook, cluster, action string
	ev                    Event
}

// runHooks runs a cluster's hooks one at a time, in the order of its
// transitions.
func runHooks(jobs <-chan hookJob, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case j := <-jobs:
			runHook(j.hook, j.cluster, j.action, j.ev, done)
		}
	}
}

// runHook runs an on_down/on_up hook: a URL gets the event as a JSON POST,
// anything else is run as a command (no shell) with HEALTHSWITCH_* variables.
func runHook(hook, cluster, action string, ev Event, done <-chan struct{}) {
	defer func() {
		if r := recover(); r != nil {
			log.Errorf("hook for %s: panic: %v", cluster, r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), hookTimeout)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var err error
	if strings.HasPrefix(hook, "http://") || strings.HasPrefix(hook, "https://") {
		body, _ := json.Marshal(ev)
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, hook, strings.NewReader(string(body)))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	} else {
		argv := strings.Fields(hook)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(cmd.Environ(), "HEALTHSWITCH_CLUSTER="+cluster, "HEALTHSWITCH_ACTION="+action,
			"HEALTHSWITCH_STATE="+string(ev.To), "HEALTHSWITCH_REASON="+ev.Reason)
		err = cmd.Run()
	}
	result := "ok"
	if err != nil {
		result = "error"
		log.Warningf("hook %q for cluster %s: %v", hook, cluster, err)
	}
	notifications.WithLabelValues("hook", result).Inc()
}

// forward passes an accepted report to every peer as it came, marked so it
// is not passed on again.
func (e *engine) forward(body []byte, ts, sig string) {
	if len(e.peers) == 0 {
		return
	}
	hdr := http.Header{}
	hdr.Set(report.HeaderTimestamp, ts)
	hdr.Set(report.HeaderSignature, sig)
	hdr.Set(report.HeaderForwarded, "1")
	for _, p := range e.peers {
		p.send(message{body: body, hdr: hdr, path: "/v1/report"})
	}
}

// forwardDrain passes an operator drain to the peers, signed anew with the
// admin key.
func (e *engine) forwardDrain(cluster string, drain bool, body []byte) {
	if len(e.peers) == 0 || len(e.cfg.adminKeys) == 0 {
		return
	}
	verb := "undrain"
	if drain {
		verb = "drain"
	}
	hdr := http.Header{}
	ts, sig := report.Sign(e.cfg.adminKeys[0], e.now(), body)
	hdr.Set(report.HeaderTimestamp, ts)
	hdr.Set(report.HeaderSignature, sig)
	hdr.Set(report.HeaderForwarded, "1")
	for _, p := range e.peers {
		p.send(message{body: body, hdr: hdr, path: "/v1/clusters/" + cluster + "/" + verb})
	}
}
