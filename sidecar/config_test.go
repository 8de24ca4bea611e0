package sidecar

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestLoadInvalid(t *testing.T) {
	want := map[string]string{
		"bad-check-name.yaml":                 `checks[0] (my check): name "my check": use letters, digits`,
		"bad-check-timeout.yaml":              `checks[0] (web): timeout: "5x" is not a duration`,
		"bad-dns-type.yaml":                   `checks[0] (dns): dns: type "AAAAA": unknown record type`,
		"bad-duplicate-name.yaml":             `checks[1] (web): duplicate name, first used by checks[0]`,
		"bad-empty.yaml":                      `config is empty`,
		"bad-exec-command-string.yaml":        "cannot unmarshal !!str `test -e...` into []string",
		"bad-exec-no-command.yaml":            `checks[0] (ready): exec: command: required`,
		"bad-heartbeat.yaml":                  `heartbeat: -1s must be positive`,
		"bad-realtime-priority.yaml":          `realtime_priority 100: a SCHED_FIFO priority is 1 to 99 (0: the normal scheduler)`,
		"bad-http-url.yaml":                   `checks[0] (web): http: url "127.0.0.1:8080/healthz": not an http:// or https:// URL`,
		"bad-interval.yaml":                   `interval: "100" is not a duration`,
		"bad-missing-key-file.yaml":           `key_file: key file: open testdata/no-such.key: no such file or directory`,
		"bad-negative-fall.yaml":              `checks[0] (web): fall -1: must be between 1 and 100`,
		"bad-fall-huge.yaml":                  `checks[0] (web): fall 1000000000: must be between 1 and 100`,
		"bad-rise-huge.yaml":                  `checks[0] (web): rise 101: must be between 1 and 100`,
		"bad-check-interval-zero.yaml":        `checks[0] (web): interval: 0s must be positive`,
		"bad-check-interval-too-long.yaml":    `checks[0] (web): interval: 2h0m0s is out of range [10ms, 1h0m0s]`,
		"bad-interval-too-short.yaml":         `interval: 1ms is out of range [10ms, 1h0m0s]`,
		"bad-interval-list.yaml":              `line 4: want a duration such as 100ms or 2s`,
		"bad-heartbeat-too-long.yaml":         `heartbeat: 2m0s is out of range [10ms, 1m0s]`,
		"bad-listen-port.yaml":                `listen: "127.0.0.1:99999": port "99999" is not a number in 0-65535`,
		"bad-listen-port-name.yaml":           `listen: "127.0.0.1:http": port "http" is not a number in 0-65535`,
		"bad-listen-no-port.yaml":             `listen: "127.0.0.1": address 127.0.0.1: missing port in address`,
		"bad-no-checks.yaml":                  `checks: at least one check is required`,
		"bad-no-cluster.yaml":                 `cluster: required`,
		"bad-cluster-name.yaml":               `cluster "East": use lower-case letters, digits, '-' and '_', as in the Corefile`,
		"bad-no-key-file.yaml":                `key_file: required`,
		"bad-no-kind.yaml":                    `checks[0] (web): no check kind: set one of `,
		"bad-no-name.yaml":                    `checks[0]: name: required`,
		"bad-no-report-to.yaml":               `report_to: at least one URL is required`,
		"bad-postgres-ratio.yaml":             `checks[0] (db): postgres: max_connections_used 1.5: must be in (0, 1]`,
		"bad-postgres-data-dir.yaml":          `checks[0] (db): postgres: data_dir /var/lib/postgresql/no-such/main: not a PostgreSQL data directory the sidecar can read: open /var/lib/postgresql/no-such/main/PG_VERSION: no such file or directory`,
		"bad-postgres-data-dir-relative.yaml": `checks[0] (db): postgres: data_dir "testdata": must be an absolute path`,
		"bad-preset-and-other-kind.yaml":      `checks[0] (pods): more than one check kind: pods, tcp`,
		"bad-regexp.yaml":                     `checks[0] (web): http: expect_body: error parsing regexp: missing closing )`,
		"bad-report-to-url.yaml":              `report_to[1]: "dns-b:8053" is not an http:// or https:// URL`,
		"bad-short-key.yaml":                  `key_file: key file testdata/short.key: key is 5 bytes, need at least 16`,
		"bad-tcp-address.yaml":                `checks[0] (port): tcp: address "127.0.0.1": address 127.0.0.1: missing port in address`,
		"bad-timeout-ge-interval.yaml":        `checks[2] (orders-db): timeout 120ms must be less than interval 100ms`,
		"bad-two-kinds.yaml":                  `checks[0] (web): more than one check kind: http, tcp`,
		"bad-unknown-check-key.yaml":          `field expected_status not found in type sidecar.HTTPSpec`,
		"bad-unknown-key.yaml":                `field intervl not found in type sidecar.Config`,
		"bad-unknown-preset.yaml":             `checks[0] (k8s): preset "kubelet": unknown (one of crio, iptables, nftables, ovs, pods, vm)`,
		"bad-mysql-dsn.yaml":                  `checks[0] (db): mysql: dsn: time: invalid duration "xxxxx"`,
		"bad-mysql-no-dsn.yaml":               `checks[0] (db): mysql: dsn: required (user:password@tcp(host:3306)/)`,
		"bad-mysql-ratio.yaml":                `checks[0] (db): mysql: max_connections_used 1.5: must be in (0, 1]`,
		"bad-redis-address.yaml":              `checks[0] (cache): redis: address "127.0.0.1": address 127.0.0.1: missing port in address`,
		"bad-redis-max-clients.yaml":          `checks[0] (cache): redis: max_clients -1: must not be negative`,
		"bad-redis-ratio.yaml":                `checks[0] (cache): redis: max_clients_used -0.1: must be in (0, 1]`,
		"bad-redis-role.yaml":                 `checks[0] (cache): redis: role "primary": must be master or replica`,
		"bad-redis-username.yaml":             `checks[0] (cache): redis: username "probe": needs a password`,
		"bad-grpc-ca-file.yaml":               `checks[0] (api): grpc: ca_file testdata/test.key: no PEM certificate in it`,
		"bad-grpc-no-address.yaml":            `checks[0] (api): grpc: address: required (host:port)`,
		"bad-watch-on.yaml":                   `checks[0] (ready): watch: on, but kind exec has no event source`,
		"bad-watch-value.yaml":                `checks[0] (web): watch "yes": use auto, on or off`,
	}
	files, _ := filepath.Glob("testdata/bad-*.yaml")
	if len(files) != len(want) {
		t.Errorf("%d bad-*.yaml files, %d expectations: every file needs one", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			exp, ok := want[name]
			if !ok {
				t.Fatalf("no expected error for %s", name)
			}
			_, err := Load(f)
			if err == nil {
				t.Fatalf("loaded; want error %q", exp)
			}
			if !strings.Contains(err.Error(), exp) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, exp)
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Heartbeat.Duration != DefaultHeartbeat || cfg.Interval.Duration != 200*time.Millisecond || cfg.Listen != DefaultListen {
		t.Errorf("top level: heartbeat %s interval %s listen %s", cfg.Heartbeat, cfg.Interval, cfg.Listen)
	}
	if got := cfg.Targets(); len(got) != 1 || got[0] != "http://127.0.0.1:8053/v1/report" {
		t.Errorf("targets = %v", got)
	}
	if string(cfg.Key) != "test-key-0123456789abcdef0123456789" {
		t.Errorf("key = %q", cfg.Key)
	}
	tests := []struct {
		name              string
		kind              string
		interval, timeout time.Duration
		fall, rise        int
		critical          bool
	}{
		{"web", "http", 200 * time.Millisecond, 80 * time.Millisecond, 1, 2, true},
		{"pods", "pods", 200 * time.Millisecond, 160 * time.Millisecond, DefaultFall, DefaultRise, true},
		{"workers", "vm", 200 * time.Millisecond, 160 * time.Millisecond, DefaultFall, DefaultRise, false},
		{"orders-db", "postgres", time.Second, 800 * time.Millisecond, DefaultFall, DefaultRise, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg.Checks[i]
			if c.Name != tc.name || c.Kind() != tc.kind || c.Period() != tc.interval || c.Deadline() != tc.timeout ||
				c.fall != tc.fall || c.rise != tc.rise || c.IsCritical() != tc.critical {
				t.Errorf("got %s kind %s interval %s timeout %s fall %d rise %d critical %v", c.Name, c.Kind(), c.Period(), c.Deadline(), c.fall, c.rise, c.IsCritical())
			}
		})
	}
	if got := cfg.Checks[1].Pods.Command; strings.Join(got, " ") != "crictl ps -a" {
		t.Errorf("pods preset command = %v", got)
	}
	if vm := cfg.Checks[2].VM; vm.URI != DefaultLibvirtURI || !vm.native || strings.Join(vm.Command, " ") != "virsh -c qemu:///system list --all" || vm.Domains[0] != "worker-1" {
		t.Errorf("vm preset = %+v", vm)
	}
	if cfg.Checks[3].Postgres.MaxConnectionsUsed != 0.9 {
		t.Errorf("postgres ratio = %v", cfg.Checks[3].Postgres.MaxConnectionsUsed)
	}
}

// The examples are loaded with the real loader; only key_file is pointed at
// a key that exists here.
func TestExamplesLoad(t *testing.T) {
	key := filepath.Join(t.TempDir(), "east.key")
	if err := os.WriteFile(key, []byte("example-key-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`(?m)^key_file: \S+`)
	for _, tc := range []struct {
		file   string
		checks int
	}{
		{"../examples/sidecar.yaml", 1},
		{"../examples/sidecar-full.yaml", 16},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if !keyLine.Match(b) {
				t.Fatal("no key_file line")
			}
			cfg, err := Parse(keyLine.ReplaceAll(b, []byte("key_file: "+key)), filepath.Dir(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Checks) != tc.checks {
				t.Errorf("%d checks, want %d", len(cfg.Checks), tc.checks)
			}
		})
	}
}

// Every kind appears in the full example, so the reference covers them all.
func TestFullExampleUsesEveryKind(t *testing.T) {
	b, err := os.ReadFile("../examples/sidecar-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for kind := range probers {
		if !regexp.MustCompile(`(?m)^\s+(` + kind + `:|preset: ` + kind + `$)`).Match(b) {
			t.Errorf("kind %s is missing from examples/sidecar-full.yaml", kind)
		}
	}
}
