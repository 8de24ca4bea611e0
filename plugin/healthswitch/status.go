package healthswitch

import (
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"
)

type statusDoc struct {
	Epoch    uint64          `json:"epoch"`
	Zones    []string        `json:"zones"`
	Policy   string          `json:"policy"`
	Detect   string          `json:"detect"`
	AllDown  string          `json:"all_down"`
	Clusters []clusterStatus `json:"clusters"`
	Names    []nameStatus    `json:"names"`
	Peers    []outboxStatus  `json:"peers,omitempty"`
	Store    *storeStatus    `json:"store,omitempty"` // persist.go
}

type clusterStatus struct {
	Name    string         `json:"name"`
	State   State          `json:"state"`
	Since   time.Time      `json:"since"`
	Reason  string         `json:"reason"`
	Drained bool           `json:"drained"`
	Sidecar sidecarStatus  `json:"sidecar"`
	Probe   probeStatus    `json:"probe"`
	Notify  []outboxStatus `json:"notify,omitempty"`
}

type sidecarStatus struct {
	Signal     signal    `json:"signal"`
	Reason     string    `json:"reason,omitempty"`
	LastReport time.Time `json:"last_report,omitzero"`
	BootID     string    `json:"boot_id,omitempty"`
	Sequence   uint64    `json:"sequence,omitempty"`
	Checks     any       `json:"checks,omitempty"`
}

type probeStatus struct {
	Signal  signal         `json:"signal"`
	Reason  string         `json:"reason,omitempty"`
	Targets []targetStatus `json:"targets,omitempty"`
}

type targetStatus struct {
	URL       string    `json:"url"`
	State     string    `json:"state"`
	LastOK    bool      `json:"last_ok"`
	LastAt    time.Time `json:"last_at,omitzero"`
	LastRTTMS float64   `json:"last_rtt_ms"`
	LastError string    `json:"last_error,omitempty"`
}

type nameStatus struct {
	Name    string             `json:"name"`
	A       []string           `json:"a,omitempty"`
	AAAA    []string           `json:"aaaa,omitempty"`
	Weights map[string]float64 `json:"weights,omitempty"`
	AllDown bool               `json:"all_down"`
	Level   levelStatus        `json:"level"`
}

// levelStatus is a name's effective availability level: its app block's,
// or the block-wide one.
type levelStatus struct {
	Policy    string `json:"policy"`
	AllDown   string `json:"all_down"`
	TTL       uint32 `json:"ttl"`
	SlowStart string `json:"slow_start"` // a Go duration, as in the Corefile: "0s" when off
}

func (h *HealthSwitch) status() statusDoc {
	e := h.engine
	v := e.view()
	snap := v.snap
	doc := statusDoc{Epoch: snap.epoch, Zones: h.cfg.zones, Policy: h.cfg.policy, Detect: h.cfg.detect, AllDown: h.cfg.allDown, Clusters: v.clusters}
	doc.Store = h.storeStatus()
	for i, cl := range h.cfg.clusters {
		for _, u := range cl.notify {
			doc.Clusters[i].Notify = append(doc.Clusters[i].Notify, outboxStatusOf(e.send, u, notifyKey(cl.name, u)))
		}
	}
	for _, ap := range h.cfg.apps {
		set := snap.sets[snap.names[ap.name].set]
		lvl := set.a.level
		ns := nameStatus{Name: ap.name, AllDown: set.a.allDown, A: answered(set.a), AAAA: answered(set.aaaa),
			Level: levelStatus{Policy: lvl.policy, AllDown: lvl.allDown, TTL: lvl.ttl, SlowStart: lvl.slowStart.String()}}
		if lvl.policy == policyWeighted || !set.a.allDown && set.a.flat == nil {
			ns.Weights = map[string]float64{}
			for _, g := range append(append([]group(nil), set.a.groups...), set.aaaa.groups...) {
				ns.Weights[g.cluster] = g.weight
			}
		}
		doc.Names = append(doc.Names, ns)
	}
	for _, p := range h.cfg.peers {
		var keys []string
		for _, cl := range h.cfg.clusters {
			keys = append(keys, peerKey(p, "report", cl.name), peerKey(p, "drain", cl.name))
		}
		doc.Peers = append(doc.Peers, outboxStatusOf(e.send, p, keys...))
	}
	return doc
}

// answered lists every address a query may be answered with now.
func answered(s *answerSet) []string {
	var ips []net.IP
	if s.allDown && s.level.allDown == allDownServeAll {
		ips = s.fallback
	}
	for _, g := range s.groups {
		ips = append(ips, g.ips...)
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	sort.Strings(out)
	return out
}

func (h *HealthSwitch) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.status())
}

// handleEvents lists the recent transitions; ?since=EPOCH only those after
// that epoch, so a poller fetches what is new.
func (h *HealthSwitch) handleEvents(w http.ResponseWriter, r *http.Request) {
	var since uint64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, reject(http.StatusBadRequest, "malformed", "since=%q is not an epoch", v))
			return
		}
		since = n
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": h.engine.eventsSince(since)})
}
