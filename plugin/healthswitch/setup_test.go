package healthswitch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
)

// writeKey writes a key file and returns its path.
func writeKey(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func parseString(t *testing.T, input string) (*config, error) {
	t.Helper()
	c := caddy.NewTestController("dns", input)
	c.ServerBlockKeys = []string{"svc1.net.:53", "svc2.net.:53"}
	return parse(c)
}

func TestParseDefaults(t *testing.T) {
	cfg, err := parseString(t, "healthswitch {\n cluster a 192.0.2.1\n}")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.policy != policyAll || cfg.ttl != defaultTTL || cfg.listen != defaultListen || cfg.interval != defaultInterval ||
		cfg.timeout != defaultTimeout || cfg.fall != 2 || cfg.rise != 2 || cfg.stale != defaultStale ||
		cfg.detect != detectBoth || cfg.allDown != allDownServeAll || !cfg.unknownUp {
		t.Errorf("defaults: %+v", cfg)
	}
	if len(cfg.apps) != 2 || cfg.apps[0].name != "svc1.net." || cfg.apps[1].name != "svc2.net." || cfg.apps[0].clusters[0] != "a" {
		t.Errorf("default apps: %+v", cfg.apps)
	}
}

func TestParseFull(t *testing.T) {
	key := writeKey(t, "0123456789abcdef0123")
	input := `healthswitch {
    cluster east 192.0.2.10 2001:db8::10 {
        probe http://192.0.2.10:8080/healthz
        probe tcp://192.0.2.10:443
        key_file ` + key + `
        priority 1
        weight 100
        notify http://192.0.2.10:9000/v1/distribution
        on_down /usr/local/bin/page-oncall --cluster east
    }
    cluster west 198.51.100.10 {
        key_file ` + key + `
        priority 2
        weight 50
    }
    app svc1.net east west
    app www.svc2.net west
    policy failover
    ttl 30
    listen 127.0.0.1:0
    interval 200ms
    timeout 150ms
    fall 3
    rise 4
    stale 1s
    detect both
    all_down nodata
    unknown down
    holddown 5s
    slow_start 10s
    peers http://10.0.0.2:8053 http://10.0.0.3:8053
    admin_key_file ` + key + `
    ns ns1.svc1.net ns2.svc1.net
    hostmaster ops.svc1.net
    fallthrough
}`
	cfg, err := parseString(t, input)
	if err != nil {
		t.Fatal(err)
	}
	east := cfg.cluster("east")
	if len(east.v4) != 1 || len(east.v6) != 1 || len(east.probes) != 2 || east.key == nil || len(east.notify) != 1 || east.onDown == nil {
		t.Errorf("east: %+v", east)
	}
	// Parsed once, kept typed: the probe URL split, the hook as its argv.
	if p := east.probes[1]; p.raw != "tcp://192.0.2.10:443" || p.scheme != "tcp" || p.host != "192.0.2.10:443" {
		t.Errorf("probe: %+v", p)
	}
	if h := east.onDown; h.url != "" || strings.Join(h.argv, "|") != "/usr/local/bin/page-oncall|--cluster|east" {
		t.Errorf("on_down: %+v", h)
	}
	if w := cfg.cluster("west"); w.priority != 2 || w.weight != 50 {
		t.Errorf("west: %+v", w)
	}
	if cfg.policy != policyFailover || cfg.ttl != 30 || cfg.interval != 200*time.Millisecond || cfg.fall != 3 || cfg.rise != 4 ||
		cfg.allDown != allDownNodata || cfg.unknownUp || cfg.holddown != 5*time.Second || len(cfg.peers) != 2 ||
		len(cfg.nameservers) != 2 || cfg.hostmaster != "ops.svc1.net." || len(cfg.adminKeys) != 1 {
		t.Errorf("config: %+v", cfg)
	}
	if len(cfg.apps) != 2 || cfg.apps[1].name != "www.svc2.net." || cfg.apps[1].zone != "svc2.net." {
		t.Errorf("apps: %+v", cfg.apps)
	}
}

func TestParseErrors(t *testing.T) {
	shortKey := writeKey(t, "short")
	key := writeKey(t, "0123456789abcdef0123")
	tests := []struct {
		name, input, want string
	}{
		{"no cluster", "healthswitch {\n ttl 5\n}", "at least one cluster is required"},
		{"unknown property", "healthswitch {\n cluster a 192.0.2.1\n colour blue\n}", `Testfile:3 - Error during parsing: unknown property "colour"`},
		{"bad ip", "healthswitch {\n cluster a 192.0.2.300\n}", `Testfile:2 - Error during parsing: cluster a: "192.0.2.300" is not an IP address`},
		{"cluster without ip", "healthswitch {\n cluster a\n}", "cluster needs a name and at least one IP address"},
		{"duplicate cluster", "healthswitch {\n cluster a 192.0.2.1\n cluster a 192.0.2.2\n}", `Testfile:3 - Error during parsing: cluster "a" is defined twice`},
		{"duplicate address", "healthswitch {\n cluster a 192.0.2.1 192.0.2.1\n}", "address 192.0.2.1 is listed twice"},
		{"bad cluster name", "healthswitch {\n cluster East! 192.0.2.1\n}", `cluster name "East!"`},
		{"app names undefined cluster", "healthswitch {\n cluster a 192.0.2.1\n app svc1.net a b\n}", `Testfile:3 - Error during parsing: app svc1.net. names cluster "b", which is not defined`},
		{"app outside zones", "healthswitch {\n cluster a 192.0.2.1\n app example.org a\n}", "app example.org. is outside this server block's zones"},
		{"app twice", "healthswitch {\n cluster a 192.0.2.1\n app svc1.net a\n app SVC1.net a\n}", "app svc1.net. is defined twice"},
		{"ttl out of range", "healthswitch {\n cluster a 192.0.2.1\n ttl 90000\n}", "ttl: 90000 is out of range [0, 86400]"},
		{"ttl not a number", "healthswitch {\n cluster a 192.0.2.1\n ttl five\n}", `ttl: "five" is not a whole number`},
		{"negative duration", "healthswitch {\n cluster a 192.0.2.1\n stale -1s\n}", "stale: -1s must be greater than 0"},
		{"zero interval", "healthswitch {\n cluster a 192.0.2.1\n interval 0s\n}", "interval: 0s must be greater than 0"},
		{"bad duration", "healthswitch {\n cluster a 192.0.2.1\n holddown soon\n}", `holddown: "soon" is not a duration`},
		{"timeout not below interval", "healthswitch {\n cluster a 192.0.2.1\n interval 100ms\n timeout 100ms\n}", "timeout 100ms must be less than interval 100ms"},
		{"bad policy", "healthswitch {\n cluster a 192.0.2.1\n policy random\n}", `policy: "random" is not one of all, failover, weighted`},
		{"bad detect", "healthswitch {\n cluster a 192.0.2.1\n detect magic\n}", `detect: "magic" is not one of sidecar, probe, both`},
		{"bad all_down", "healthswitch {\n cluster a 192.0.2.1\n all_down panic\n}", `all_down: "panic" is not one of serve_all, servfail, nodata`},
		{"policy arity", "healthswitch {\n cluster a 192.0.2.1\n policy all failover\n}", "Wrong argument count"},
		{"bad probe scheme", "healthswitch {\n cluster a 192.0.2.1 {\n  probe udp://192.0.2.1:53\n }\n}", `probe: "udp://192.0.2.1:53": scheme must be one of http, https, tcp`},
		{"tcp probe without port", "healthswitch {\n cluster a 192.0.2.1 {\n  probe tcp://192.0.2.1\n }\n}", "needs a port"},
		{"unknown cluster property", "healthswitch {\n cluster a 192.0.2.1 {\n  colour red\n }\n}", `Testfile:3 - Error during parsing: cluster a: unknown property "colour"`},
		{"missing key file", "healthswitch {\n cluster a 192.0.2.1 {\n  key_file /nonexistent/key\n }\n}", "key_file: key file: open /nonexistent/key"},
		{"short key", "healthswitch {\n cluster a 192.0.2.1 {\n  key_file " + shortKey + "\n }\n}", "key is 5 bytes, need at least 16"},
		{"bad listen", "healthswitch {\n cluster a 192.0.2.1\n listen 8053\n}", `listen: "8053" is not host:port`},
		{"bad listen host", "healthswitch {\n cluster a 192.0.2.1\n listen dns.example:8053\n}", `listen: host "dns.example" is not an IP address`},
		{"bad peer", "healthswitch {\n cluster a 192.0.2.1\n peers 10.0.0.2:8053\n}", "peers:"},
		{"weight out of range", "healthswitch {\n cluster a 192.0.2.1 {\n  weight -1\n }\n}", "weight: -1 is out of range"},
		{"weighted all zero", "healthswitch {\n cluster a 192.0.2.1 {\n  weight 0\n }\n policy weighted\n}", "policy weighted needs at least one cluster with a weight above 0"},
		{"detect probe without probe", "healthswitch {\n cluster a 192.0.2.1\n detect probe\n}", "detect probe: cluster a has no probe"},
		{"detect sidecar without key", "healthswitch {\n cluster a 192.0.2.1\n detect sidecar\n}", "detect sidecar: cluster a has no key_file"},
		{"notify without key", "healthswitch {\n cluster a 192.0.2.1 {\n  notify http://192.0.2.1:9000/\n }\n}", "notify needs key_file"},
		{"tls files missing", "healthswitch {\n cluster a 192.0.2.1\n tls /nonexistent/cert /nonexistent/key\n}", "tls: open /nonexistent/cert"},
		{"twice in a block", "healthswitch {\n cluster a 192.0.2.1\n}\nhealthswitch {\n cluster a 192.0.2.1\n}", "healthswitch may appear only once per server block"},
		{"unclosed cluster block", "healthswitch {\n cluster a 192.0.2.1 {\n  key_file " + key, "Unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseString(t, tc.input)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\n does not contain %q", err, tc.want)
			}
		})
	}
}

func TestParseRootZoneNeedsApps(t *testing.T) {
	c := caddy.NewTestController("dns", "healthswitch {\n cluster a 192.0.2.1\n}")
	c.ServerBlockKeys = []string{".:53"}
	if _, err := parse(c); err == nil || !strings.Contains(err.Error(), "root zone has no default app name") {
		t.Errorf("err = %v", err)
	}
}
