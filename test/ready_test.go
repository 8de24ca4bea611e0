package test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// CoreDNS's ready plugin reports not ready until every cluster of the
// healthswitch block has had a first signal.
func TestReadyPluginWaitsForFirstReports(t *testing.T) {
	readyPort := freePort(t)
	cf := strings.Replace(pushCorefile(t, "ready_timeout 1h"), "    healthswitch {", fmt.Sprintf("    ready 127.0.0.1:%d\n    healthswitch {", readyPort), 1)
	s := realCoreDNS(t, cf)
	ready := func() int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready before any report: %d, want 503", code)
	}
	(newPusher("east", eastKey)).push(s.api, true)
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready with west silent: %d, want 503", code)
	}
	(newPusher("west", westKey)).push(s.api, false)
	waitFor(t, 3*time.Second, "/ready to answer 200", func() bool { return ready() == http.StatusOK })
}
