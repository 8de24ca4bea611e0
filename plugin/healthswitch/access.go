package healthswitch

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// apiConfig is the push API's access rule and limits, as set by the
// read_key_file, status_public and limits sub-directives. Zero values mean
// the defaults (limits.go).
type apiConfig struct {
	readKeys     [][]byte // bearer keys that may read /v1/status and /v1/events from anywhere
	statusPublic bool     // anyone who reaches the port may read them
	maxConns     int      // connections open at once
	perSource    int      // connections per source address
	perSourceReq int      // requests per source address reading a body at once
}

// readable guards a route that shows state (/v1/status, /v1/events, and
// any later read route: wrap its handler in it). Without a key it answers
// only loopback clients, unless status_public; with read_key_file,
// `Authorization: Bearer <key>` opens it from anywhere. Otherwise 403.
func (h *HealthSwitch) readable(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.mayRead(r) {
			next(w, r)
			return
		}
		writeError(w, reject(http.StatusForbidden, "read_forbidden",
			"reading the state from %s needs Authorization: Bearer <read key> (read_key_file), or status_public in the Corefile", sourceOf(r.RemoteAddr)))
	}
}

func (h *HealthSwitch) mayRead(r *http.Request) bool {
	if h.cfg.api.statusPublic || isLoopback(r.RemoteAddr) {
		return true
	}
	if validBearer(h.cfg.api.readKeys, r.Header.Get("Authorization")) {
		trust(r.Context())
		return true
	}
	return false
}

// validBearer compares the bearer token with each key in constant time
// (over their hashes, so the length does not show either).
func validBearer(keys [][]byte, header string) bool {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || len(keys) == 0 {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for _, k := range keys {
		want := sha256.Sum256(k)
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

func isLoopback(remoteAddr string) bool {
	ip := net.ParseIP(sourceOf(remoteAddr))
	return ip != nil && ip.IsLoopback()
}

// sourceOf is the host part of a remote address.
func sourceOf(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// loopbackOnly reports whether a listen address accepts loopback clients
// only.
func loopbackOnly(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// warnExposure says loudly at start what a listen address exposes.
func warnExposure(cfg *config) {
	if loopbackOnly(cfg.listen) {
		return
	}
	if cfg.tls == nil {
		log.Warningf("push API on %s is reachable beyond this host WITHOUT tls: report and operator bodies, and any bearer read key, cross the network in clear text; add `tls CERT KEY`", cfg.listen)
	}
	if cfg.api.statusPublic {
		log.Warningf("push API on %s: status_public lets anyone who reaches the port read /v1/status and /v1/events (clusters, addresses, reasons)", cfg.listen)
	}
}
