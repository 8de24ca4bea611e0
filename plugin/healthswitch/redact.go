package healthswitch

import (
	"net/url"
	"regexp"
	"strings"
)

// What may be shown (/v1/status, /v1/events, logs, notifications) never
// carries a credential: URL passwords, secret-looking query values, DSN
// passwords and bearer tokens are replaced by redacted.
const redacted = "REDACTED"

// secretWords: a query or DSN key containing one of these (any case) has its
// value redacted. Over-redacting a harmless value is the accepted cost.
var secretWords = []string{"token", "secret", "password", "passwd", "pass", "pwd", "auth", "sig", "key", "credential", "session", "cookie"}

func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// redactURL returns u with its userinfo password and the values of its
// secret-looking query (and fragment) parameters replaced. Text that is not
// a URL is redacted as free text.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Scheme == "" || (p.Host == "" && p.Opaque == "" && p.User == nil) {
		return redactPairs(u)
	}
	if _, has := p.User.Password(); has {
		p.User = url.UserPassword(p.User.Username(), redacted)
	}
	p.RawQuery = redactQuery(p.RawQuery)
	if strings.Contains(p.Fragment, "=") {
		p.Fragment, p.RawFragment = redactQuery(p.Fragment), ""
	}
	return p.String()
}

// redactQuery redacts the secret values of a k=v&k=v list, keeping its order
// and everything else as written.
func redactQuery(q string) string {
	if q == "" {
		return q
	}
	parts := strings.Split(q, "&")
	for i, kv := range parts {
		k, _, ok := strings.Cut(kv, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if ok && secretKey(k) {
			parts[i] = kv[:strings.IndexByte(kv, '=')+1] + redacted
		}
	}
	return strings.Join(parts, "&")
}

var (
	urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>|` + "`" + `]+`)
	// scheme://user:password@ where the rest does not parse as a URL.
	userinfoInText = regexp.MustCompile(`(://[^/@:\s]*):[^@/\s]+@`)
	// key=value as in a key/value DSN (password=... host=...) or a log line.
	pairInText = regexp.MustCompile(`([A-Za-z0-9_.\-]+)=("[^"]*"|'[^']*'|[^\s&;,"']+)`)
	// user:password@tcp(host) as in a MySQL DSN.
	dsnInText = regexp.MustCompile(`([A-Za-z0-9_.\-]+):[^@\s/:]+@(tcp|udp|unix)\(`)
	bearer    = regexp.MustCompile(`(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}`)
)

// redactText redacts every credential it can recognize in free text: URLs
// (as redactURL), secret-looking key=value pairs, MySQL-style DSN passwords
// and bearer tokens.
func redactText(s string) string {
	s = urlInText.ReplaceAllStringFunc(s, redactURL)
	return redactPairs(s)
}

func redactPairs(s string) string {
	s = pairInText.ReplaceAllStringFunc(s, func(m string) string {
		k, _, _ := strings.Cut(m, "=")
		if secretKey(k) {
			return k + "=" + redacted
		}
		return m
	})
	s = dsnInText.ReplaceAllString(s, "${1}:"+redacted+"@${2}(")
	s = userinfoInText.ReplaceAllString(s, "${1}:"+redacted+"@")
	return bearer.ReplaceAllString(s, "${1} "+redacted)
}
