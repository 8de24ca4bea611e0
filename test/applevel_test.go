package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/healthswitch/healthswitch/internal/corednstest"
)

// appLevelCorefile serves two names on the same two clusters: pay with the
// level given, www with the block-wide one (policy all, all_down serve_all,
// ttl 30).
func appLevelCorefile(east, west string, dnsPort, apiPort int, payLevel string) string {
	return fmt.Sprintf(`svc1.net:%d {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file %s
            priority 1
        }
        cluster west 127.0.0.12 {
            key_file %s
            priority 2
        }
        listen 127.0.0.1:%d
        stale 1h
        ttl 30
        app pay.svc1.net east west {
%s
        }
        app www.svc1.net east west
    }
}
`, dnsPort, east, west, apiPort, payLevel)
}

// levelAnswer is what a client sees for name: the rcode, the sorted addresses
// and their TTL (-1 without any).
func levelAnswer(t *testing.T, addr, name string) (rcode, ips string, ttl int) {
	t.Helper()
	r, err := realQuery(addr, "udp", name, dns.TypeA)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	ttl = -1
	var out []string
	for _, rr := range r.Answer {
		out = append(out, rr.(*dns.A).A.String())
		ttl = int(rr.Header().Ttl)
	}
	sort.Strings(out)
	return dns.RcodeToString[r.Rcode], strings.Join(out, " "), ttl
}

// Two apps on the same clusters, each answered per its own level through
// failures and recovery driven by signed reports; then a reload that
// changes one app's level while a cluster is down: the cluster stays down
// and the new level applies at once.
func TestAppLevelsThroughFailuresAndReload(t *testing.T) {
	east, west := keyFiles(t)
	dnsPort, apiPort := freePort(t), freePort(t)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	failClosed := "            policy failover\n            all_down servfail\n            ttl 1\n            slow_start 30s"
	s := corednstest.Start(t, appLevelCorefile(east, west, dnsPort, apiPort, failClosed))
	eastP, westP := newPusher("east", eastKey), newPusher("west", westKey)
	push := func(p *pusher, healthy bool) {
		t.Helper()
		if code, err := p.push(api, healthy); code != http.StatusNoContent {
			t.Fatalf("%s report (healthy %t): %d %v", p.Cluster, healthy, code, err)
		}
	}
	type seen struct {
		rcode, ips string
		ttl        int
	}
	expect := func(step, name string, want seen) {
		t.Helper()
		rcode, ips, ttl := levelAnswer(t, dnsAddr, name)
		if got := (seen{rcode, ips, ttl}); got != want {
			t.Errorf("%s: %s answered %+v, want %+v", step, name, got, want)
		}
	}
	const both, primary, standby = "127.0.0.11 127.0.0.12", "127.0.0.11", "127.0.0.12"

	push(eastP, true)
	push(westP, true)
	expect("both up", "pay.svc1.net.", seen{"NOERROR", primary, 1})
	expect("both up", "www.svc1.net.", seen{"NOERROR", both, 30})

	push(eastP, false)
	expect("east down", "pay.svc1.net.", seen{"NOERROR", standby, 1})
	expect("east down", "www.svc1.net.", seen{"NOERROR", standby, 30})

	// east comes back: pay (slow_start 30s) ramps it in while the standby
	// keeps answering; www takes it back whole.
	push(eastP, true)
	expect("east back", "www.svc1.net.", seen{"NOERROR", both, 30})
	for range 20 {
		if _, ips, _ := levelAnswer(t, dnsAddr, "pay.svc1.net."); ips != standby && ips != both {
			t.Fatalf("east back: pay answered %q, want the standby, with east or without", ips)
		}
	}
	st := levelStatus(t, api)
	if w := st.name("pay.svc1.net.").Weights; w["east"] <= 0 || w["east"] >= 1 || w["west"] != 1 {
		t.Errorf("east back: pay weighs %v, want east a slow start share in (0,1), west 1", w)
	}
	if w := st.name("www.svc1.net."); w.Weights != nil {
		t.Errorf("east back: www weighs %v, want every cluster whole", w.Weights)
	}

	// west fails while east still ramps in: east is all pay has, answered
	// whole.
	push(westP, false)
	expect("west down", "pay.svc1.net.", seen{"NOERROR", primary, 1})
	expect("west down", "www.svc1.net.", seen{"NOERROR", primary, 30})

	push(eastP, false)
	expect("all down", "pay.svc1.net.", seen{"SERVFAIL", "", -1})
	expect("all down", "www.svc1.net.", seen{"NOERROR", both, 30})

	push(westP, true)
	expect("west back", "pay.svc1.net.", seen{"NOERROR", standby, 1})
	expect("west back", "www.svc1.net.", seen{"NOERROR", standby, 30})

	// A reload changes pay's level while east is down.
	failOpen := "            policy all\n            all_down nodata\n            ttl 5"
	if err := s.Reload(appLevelCorefile(east, west, dnsPort, apiPort, failOpen)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	st = levelStatus(t, api)
	if got := st.clusterState("east"); got != "down" {
		t.Errorf("after reload: east is %q, want still down", got)
	}
	if got := st.name("pay.svc1.net.").Level; got != (levelDoc{"all", "nodata", 5, "0s"}) {
		t.Errorf("after reload: pay level %+v", got)
	}
	if got := st.name("www.svc1.net.").Level; got != (levelDoc{"all", "serve_all", 30, "0s"}) {
		t.Errorf("after reload: www level %+v", got)
	}
	expect("reloaded, east down", "pay.svc1.net.", seen{"NOERROR", standby, 5})
	expect("reloaded, east down", "www.svc1.net.", seen{"NOERROR", standby, 30})

	push(westP, false)
	expect("reloaded, all down", "pay.svc1.net.", seen{"NOERROR", "", -1})
	expect("reloaded, all down", "www.svc1.net.", seen{"NOERROR", both, 30})

	push(eastP, true)
	push(westP, true)
	expect("reloaded, both back", "pay.svc1.net.", seen{"NOERROR", both, 5})
	expect("reloaded, both back", "www.svc1.net.", seen{"NOERROR", both, 30})
}

type levelDoc struct {
	Policy    string `json:"policy"`
	AllDown   string `json:"all_down"`
	TTL       int    `json:"ttl"`
	SlowStart string `json:"slow_start"`
}

type levelNameDoc struct {
	Name    string             `json:"name"`
	Weights map[string]float64 `json:"weights"`
	Level   levelDoc           `json:"level"`
}

type levelStatusDoc struct {
	Clusters []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"clusters"`
	Names []levelNameDoc `json:"names"`
}

func levelStatus(t *testing.T, api string) levelStatusDoc {
	t.Helper()
	resp, err := http.Get(api + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc levelStatusDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func (d levelStatusDoc) name(n string) levelNameDoc {
	for _, x := range d.Names {
		if x.Name == n {
			return x
		}
	}
	return levelNameDoc{}
}

func (d levelStatusDoc) clusterState(c string) string {
	for _, x := range d.Clusters {
		if x.Name == c {
			return x.State
		}
	}
	return ""
}
