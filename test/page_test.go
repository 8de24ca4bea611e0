package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/healthswitch/healthswitch/internal/corednstest"
	"github.com/healthswitch/healthswitch/internal/testutil"
)

// browser starts a headless Chromium with a fresh profile and none of its
// own network traffic (which the sandbox refuses, and which stalls it).
func browser(t *testing.T) context.Context {
	t.Helper()
	testutil.Need(t, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath("chromium"),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Do starts Chromium, which lives as long as the context of
	// that call: no timeout here (the test's own bounds it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// pageShows is a page-side check: east is shown in state, by its state
// attribute and its visible badge text, and svc1.net lists exactly answer.
func pageShows(state, answer string) string {
	return fmt.Sprintf(`(() => {
  const c = document.querySelector('article.cluster[data-cluster="east"]');
  const n = document.querySelector('tr[data-name="svc1.net."] .answers');
  return !!c && c.dataset.state === %q && c.querySelector('h3 .badge').innerText.toLowerCase() === %q &&
    !!n && [...n.querySelectorAll('.addr')].map(a => a.textContent).join(' ') === %q;
})()`, state, state, answer)
}

// The status page, in a real browser against the real bin/coredns: a signed
// report flips a cluster, and the page shows the new state and the new
// answer within a second, without a reload.
func TestStatusPageLiveInBrowser(t *testing.T) {
	ctx := browser(t)
	s := realCoreDNS(t, pushCorefile(t, "stale 1h"))
	east, west := newPusher("east", eastKey), newPusher("west", westKey)
	for _, p := range []*pusher{east, west} {
		if code, err := p.push(s.api, true); code != 204 {
			t.Fatalf("report: %d %v", code, err)
		}
	}
	step := func(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
		c, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return chromedp.Do(c, actions...)
	}
	if err := step(20*time.Second,
		chromedp.Navigate(s.api+"/"),
		chromedp.Poll[chromedp.Void](pageShows("up", "127.0.0.11 127.0.0.12"), chromedp.WithPollingInterval(10*time.Millisecond)),
		chromedp.Poll[chromedp.Void](`document.getElementById("live").dataset.live === "live"`),
		chromedp.Evaluate[chromedp.Void](`window.noReload = true`),
	); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
		t.Fatalf("page before the flip: %v\n%s", err, html)
	}

	for i, want := range []struct {
		healthy       bool
		state, answer string
	}{
		{false, "down", "127.0.0.12"},
		{true, "up", "127.0.0.11 127.0.0.12"},
		{false, "down", "127.0.0.12"},
	} {
		pushed := time.Now()
		if code, err := east.push(s.api, want.healthy); code != 204 {
			t.Fatalf("report %d: %d %v", i, code, err)
		}
		if answer := answerSet(s.dns, "svc1.net."); answer != want.answer {
			t.Fatalf("DNS answers %q after report %d, want %q", answer, i, want.answer)
		}
		err := step(time.Second, chromedp.Poll[chromedp.Void](pageShows(want.state, want.answer), chromedp.WithPollingInterval(5*time.Millisecond)))
		took := time.Since(pushed)
		if err != nil {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
			t.Fatalf("page did not show east %s / %s within 1s of report %d (%v):\n%s", want.state, want.answer, i, err, html)
		}
		t.Logf("report %d: page shows east %s and svc1.net %q %v after the push", i, want.state, want.answer, took.Round(time.Millisecond))
	}
	stayed, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.noReload === true`))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#timeline li[data-cluster="east"] .bar span').length`))
	if err != nil {
		t.Fatal(err)
	}
	if !stayed {
		t.Error("the page reloaded instead of updating in place")
	}
	if rows < 3 {
		t.Errorf("timeline shows %d latency segments for east, want one per transition at least", rows)
	}
	screenshot(t, ctx)
}

// screenshot saves the page as PNG in the test's artifact directory, and as
// docs/status-page.png when HEALTHSWITCH_SCREENSHOT is set (to 1, or a path).
func screenshot(t *testing.T, ctx context.Context) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	paths := []string{filepath.Join(t.ArtifactDir(), "status-page.png")}
	if v := os.Getenv("HEALTHSWITCH_SCREENSHOT"); v == "1" {
		paths = append(paths, filepath.Join("..", "docs", "status-page.png"))
	} else if v != "" {
		paths = append(paths, v)
	}
	for _, p := range paths {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
}

// openEventStream connects to the event stream; resume is a Last-Event-ID.
func openEventStream(t *testing.T, api, resume string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, api+"/v1/events/stream", nil)
	if resume != "" {
		req.Header.Set("Last-Event-ID", resume)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	return resp, bufio.NewReader(resp.Body)
}

// nextID reads up to the next event and returns its id.
func nextID(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			return strings.TrimSpace(id)
		}
	}
}

// streamEnds waits for the server to end the stream: EOF, not a reset.
func streamEnds(t *testing.T, r *bufio.Reader, what string) {
	t.Helper()
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		ended <- err
	}()
	select {
	case err := <-ended:
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("stream ended with %v on %s", err, what)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("stream still open 5s after %s", what)
	}
}

// A Corefile reload ends the streams of the old instance cleanly; the
// reader reconnects with Last-Event-ID to the new one and misses nothing;
// shutdown ends the stream too.
func TestEventStreamEndsOnReloadAndShutdown(t *testing.T) {
	east, west := keyFiles(t)
	admin := filepath.Join(t.TempDir(), "admin.key")
	os.WriteFile(admin, []byte("admin-key-0123456789"), 0o600)
	apiPort := freePort(t)
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	dnsPort := freePort(t)
	s := corednstest.Start(t, reloadCorefile(t, east, west, admin, dnsPort, apiPort, ""))
	p := newPusher("east", eastKey)
	_, r := openEventStream(t, api, "")
	if code, err := p.push(api, false); code != 204 {
		t.Fatalf("report: %d %v", code, err)
	}
	last := nextID(t, r)

	if err := s.Reload(reloadCorefile(t, east, west, admin, dnsPort, apiPort, "ttl 5")); err != nil {
		t.Fatal(err)
	}
	streamEnds(t, r, "a reload")
	// What happens before the reader is back is not lost.
	if code, err := p.push(api, true); code != 204 {
		t.Fatalf("report after reload: %d %v", code, err)
	}
	_, r = openEventStream(t, api, last)
	if id, _ := strconv.ParseUint(nextID(t, r), 10, 64); id <= mustUint(t, last) {
		t.Fatalf("resumed at id %d after %s", id, last)
	}

	s.Stop()
	streamEnds(t, r, "shutdown")
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
