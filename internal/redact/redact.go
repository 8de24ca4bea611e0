// Package redact takes secrets out of text that is about to be shown: check
// details in reports, the DNS server's status and events, logs. A URL or DSN
// in a check's configuration can carry a password, and error messages quote
// them back; what leaves the process goes through here first.
//
// Each function keeps everything but the secret values byte for byte, so a
// redacted URL still says which host and path failed, and applying a function
// twice changes nothing more.
package redact

import (
	"regexp"
	"strings"
)

// Mask replaces every secret value (Go's url.URL.Redacted uses the same).
const Mask = "xxxxx"

// URL hides the password of a URL's user information and the values of query
// parameters whose names look secret (token, key, password, sig, ...). The
// user name stays: it says which account failed. Text that is not a URL is
// returned as it is.
func URL(s string) string {
	scheme := strings.Index(s, "://")
	if scheme < 0 {
		return s
	}
	rest := s[scheme+3:]
	authEnd := strings.IndexAny(rest, "/?#")
	if authEnd < 0 {
		authEnd = len(rest)
	}
	// "a://b://u:pw@h": the second URL starts inside what would be the
	// first one's authority, and is redacted on its own below.
	if j := nestedStart(rest); j >= 0 && j < authEnd {
		authEnd = j
	}
	auth, tail := rest[:authEnd], rest[authEnd:]
	// The last '@' ends the user information: a password may contain '@'.
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		if colon := strings.IndexByte(auth[:at], ':'); colon >= 0 {
			auth = auth[:colon+1] + Mask + auth[at:]
		}
	}
	tail = query(tail)
	// A URL can carry another in its path or query (a proxy's target).
	if j := nestedStart(tail); j >= 0 {
		tail = tail[:j] + URL(tail[j:])
	}
	return s[:scheme+3] + auth + tail
}

// nestedStart is where the scheme of the first "://" in s begins, or -1.
func nestedStart(s string) int {
	i := strings.Index(s, "://")
	if i < 0 {
		return -1
	}
	for i > 0 && isSchemeByte(s[i-1]) {
		i--
	}
	return i
}

func isSchemeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}

// query masks the secret values of the query part of a URL's tail (path,
// query, fragment).
func query(tail string) string {
	// An OAuth implicit-flow fragment (#access_token=...) is a query too.
	frag := ""
	if f := strings.IndexByte(tail, '#'); f >= 0 {
		tail, frag = tail[:f], "#"+maskPairs(tail[f+1:], "&;")
	}
	q := strings.IndexByte(tail, '?')
	if q < 0 {
		return tail + frag
	}
	return tail[:q+1] + maskPairs(tail[q+1:], "&;") + frag
}

// maskPairs masks the values of the secret keys of "k=v" pairs joined by any
// of seps.
func maskPairs(s, seps string) string {
	var b strings.Builder
	for s != "" {
		i := strings.IndexAny(s, seps)
		pair, sep := s, ""
		if i >= 0 {
			pair, sep, s = s[:i], s[i:i+1], s[i+1:]
		} else {
			s = ""
		}
		if k, _, ok := strings.Cut(pair, "="); ok && Secret(k) {
			pair = k + "=" + Mask
		}
		b.WriteString(pair)
		b.WriteString(sep)
	}
	return b.String()
}

// DSN hides the password of a database connection string in either form:
// a URL (postgres://user:pw@host/db?sslpassword=...) or libpq's key=value
// list (host=db user=app password='s3 cr3t').
func DSN(s string) string {
	if strings.Contains(s, "://") {
		return URL(s)
	}
	return pairs(s)
}

var (
	// urlRE finds URLs in free text: a scheme, "://", then up to white
	// space or a character that quotes or ends the URL in prose.
	urlRE = regexp.MustCompile("[A-Za-z][A-Za-z0-9+.-]*://[^\\s\"'<>`]+")
	// pairRE finds key=value and key: value in free text; a value may be
	// quoted as libpq and shells quote it, and the key may be a quoted
	// JSON member name.
	pairRE = regexp.MustCompile(`([A-Za-z0-9_.-]+)("?\s*[=:]\s*)('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s&,;'"` + "`" + `]+)`)
)

// Text hides secrets anywhere in free text such as an error message: the
// URLs in it (as URL does) and the values of key=value or key: value pairs
// whose key looks secret (password=..., token: ...), which covers libpq
// DSNs quoted in errors.
func Text(s string) string {
	s = urlRE.ReplaceAllStringFunc(s, URL)
	s = pairs(s)
	s = mysqlDSNRE.ReplaceAllString(s, "${1}:"+Mask+"@${2}(")
	return bearerRE.ReplaceAllString(s, "${1} "+Mask)
}

var (
	// mysqlDSNRE finds user:password@tcp(host) as in a MySQL DSN.
	mysqlDSNRE = regexp.MustCompile(`([A-Za-z0-9_.\-]+):[^@\s/:]+@(tcp|udp|unix)\(`)
	// bearerRE finds an HTTP bearer token quoted in text.
	bearerRE = regexp.MustCompile(`(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}`)
)

func pairs(s string) string {
	return pairRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := pairRE.FindStringSubmatch(m)
		key, sep, val := sub[1], sub[2], sub[3]
		switch {
		case strings.HasPrefix(val, "//"):
			return m // a URL's "scheme://" is not a pair; URL handled it
		case strings.TrimSpace(sep) == ":" && !strongSecret(key):
			// "key_file: open ...": a colon in prose only hides the values
			// of names that cannot mean anything else.
			return m
		case !Secret(key):
			return m
		}
		if q := val[0]; q == '\'' || q == '"' {
			return key + sep + string(q) + Mask + string(q)
		}
		return key + sep + Mask
	})
}

// secretWords are names (or parts of names between '_', '-' and '.') that
// hold secrets; secretParts are also matched inside a longer name
// ("sslpassword", "accesstoken").
var (
	secretWords = map[string]bool{
		"token": true, "key": true, "secret": true, "password": true, "passwd": true,
		"pass": true, "pwd": true, "auth": true, "sig": true, "signature": true,
		"apikey": true, "credential": true, "credentials": true, "jwt": true,
		"bearer": true, "session": true, "cookie": true, "authorization": true,
	}
	secretParts = []string{"password", "passwd", "secret", "token", "apikey", "signature", "credential"}
)

func strongSecret(name string) bool {
	n := strings.ToLower(name)
	for _, p := range secretParts {
		if strings.Contains(n, p) {
			return true
		}
	}
	return false
}

// Secret says whether a parameter named name likely holds a secret:
// token, api_key, X-Amz-Signature, client_secret, sslpassword, ...
func Secret(name string) bool {
	if strongSecret(name) {
		return true
	}
	n := strings.ToLower(name)
	for _, w := range strings.FieldsFunc(n, func(r rune) bool { return r == '_' || r == '-' || r == '.' }) {
		if secretWords[w] {
			return true
		}
	}
	return false
}
