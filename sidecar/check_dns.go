package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// DNSSpec sends one query to a server and checks the answer.
type DNSSpec struct {
	Server   string   `yaml:"server"`   // host or host:port (port 53 by default)
	Name     string   `yaml:"name"`     // the name to query
	Type     string   `yaml:"type"`     // default A
	Protocol string   `yaml:"protocol"` // udp (default) or tcp
	Rcode    string   `yaml:"rcode"`    // expected response code, default NOERROR
	Expect   []string `yaml:"expect"`   // each must be the data of one answer record ("192.0.2.1")

	qtype  uint16
	rcode  int
	client *dns.Client
}

func (s *DNSSpec) compile(c *Check) error {
	if s.Server == "" {
		return errors.New("server: required")
	}
	if _, _, err := net.SplitHostPort(s.Server); err != nil {
		s.Server = net.JoinHostPort(strings.Trim(s.Server, "[]"), "53")
	}
	if s.Name == "" {
		return errors.New("name: required")
	}
	if _, ok := dns.IsDomainName(s.Name); !ok {
		return fmt.Errorf("name %q: not a domain name", s.Name)
	}
	if s.Type == "" {
		s.Type = "A"
	}
	var ok bool
	if s.qtype, ok = dns.StringToType[strings.ToUpper(s.Type)]; !ok {
		return fmt.Errorf("type %q: unknown record type", s.Type)
	}
	switch s.Protocol {
	case "":
		s.Protocol = "udp"
	case "udp", "tcp":
	default:
		return fmt.Errorf("protocol %q: use udp or tcp", s.Protocol)
	}
	if s.Rcode == "" {
		s.Rcode = "NOERROR"
	}
	if s.rcode, ok = dns.StringToRcode[strings.ToUpper(s.Rcode)]; !ok {
		return fmt.Errorf("rcode %q: unknown response code", s.Rcode)
	}
	s.client = &dns.Client{Net: s.Protocol, Timeout: c.timeout}
	return nil
}

func probeDNS(ctx context.Context, c *Check) Result {
	s := c.DNS
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(s.Name), s.qtype)
	in, _, err := s.client.ExchangeContext(ctx, m, s.Server)
	if err != nil {
		return fail(fmt.Errorf("dns %s %s @%s: %w", s.Name, s.Type, s.Server, err))
	}
	if in.Rcode != s.rcode {
		return fail(fmt.Errorf("dns %s %s @%s: rcode %s, want %s", s.Name, s.Type, s.Server, dns.RcodeToString[in.Rcode], s.Rcode))
	}
	var got []string
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == s.qtype {
			got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
		}
	}
	for _, want := range s.Expect {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.EqualFold(g, want) || strings.EqualFold(g, dns.Fqdn(want)) }) {
			return Result{Err: fmt.Errorf("dns %s %s @%s: %q not in answer", s.Name, s.Type, s.Server, want), Output: strings.Join(got, ", ")}
		}
	}
	return Result{Healthy: true, Detail: fmt.Sprintf("%s, %d answers", dns.RcodeToString[in.Rcode], len(got)), Output: strings.Join(got, ", ")}
}
