package sidecar

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// startDNS serves example.org A 192.0.2.1 and 192.0.2.2 on 127.0.0.1 over
// UDP; everything else is NXDOMAIN.
func startDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Name == "example.org." && q.Question[0].Qtype == dns.TypeA {
			for _, ip := range []string{"192.0.2.1", "192.0.2.2"} {
				rr, _ := dns.NewRR("example.org. 5 IN A " + ip)
				m.Answer = append(m.Answer, rr)
			}
		} else if q.Question[0].Name != "example.org." {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestDNSCheck(t *testing.T) {
	addr := startDNS(t)
	tests := []struct {
		name    string
		spec    string
		healthy bool
		why     string
	}{
		{"answer present", `{name: example.org, expect: [192.0.2.1]}`, true, "NOERROR, 2 answers"},
		{"both answers", `{name: example.org, type: a, expect: [192.0.2.1, 192.0.2.2]}`, true, "2 answers"},
		{"answer missing", `{name: example.org, expect: [192.0.2.9]}`, false, `"192.0.2.9" not in answer`},
		{"NODATA is NOERROR", `{name: example.org, type: AAAA}`, true, "0 answers"},
		{"NXDOMAIN unexpected", `{name: missing.example.org}`, false, "rcode NXDOMAIN, want NOERROR"},
		{"NXDOMAIN expected", `{name: missing.example.org, rcode: NXDOMAIN}`, true, "NXDOMAIN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCheck(t, "dns: {server: '"+addr+"', "+tc.spec[1:])
			expect(t, c, tc.healthy, tc.why)
		})
	}
}

func TestDNSCheckServerDown(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	c := newCheck(t, "dns: {server: '"+addr+"', name: example.org}\ninterval: 500ms\ntimeout: 100ms")
	expect(t, c, false, "dns example.org A @"+addr)
}
