package test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/healthswitch/healthswitch/internal/corednstest"
	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/report"
)

func TestPushAPIOverTLS(t *testing.T) {
	_, certFile, keyFile, pool := testutil.SelfSigned(t)
	east, west := keyFiles(t)
	port := freePort(t)
	corednstest.Start(t, fmt.Sprintf(`svc1.net:0 {
    healthswitch {
        cluster east 127.0.0.11 {
            key_file %s
        }
        cluster west 127.0.0.12 {
            key_file %s
        }
        listen 127.0.0.1:%d
        tls %s %s
    }
}
`, east, west, port, certFile, keyFile))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 2 * time.Second}
	r := report.Report{Version: 1, Cluster: "east", BootID: "b", Sequence: 1, SentAt: time.Now(), Healthy: true}
	body, _ := r.Encode()
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("https://127.0.0.1:%d/v1/report", port), bytes.NewReader(body))
	report.SignRequest(req, []byte(eastKey), time.Now(), body)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("report over TLS: %d", resp.StatusCode)
	}
	// Plain HTTP on the TLS port is refused.
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/v1/status", port)); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP on the TLS listener: %d", resp.StatusCode)
		}
	}
}
