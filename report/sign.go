package report

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Headers carrying the signature of a report or notification.
const (
	HeaderTimestamp = "X-Healthswitch-Timestamp"
	HeaderSignature = "X-Healthswitch-Signature"
	// HeaderForwarded marks a report one DNS server passed to a peer; it is
	// never forwarded again.
	HeaderForwarded = "X-Healthswitch-Forwarded"
)

// MinKeySize is the shortest key LoadKey accepts, MaxKeyFileSize the
// largest key file.
const (
	MinKeySize     = 16
	MaxKeyFileSize = 4096
)

// DefaultSkew is the clock difference a receiver tolerates by default.
const DefaultSkew = 30 * time.Second

const sigPrefix = "v1="

// Verification failures. Receivers map ErrBadSignature to 401 and ErrSkew to 409.
var (
	ErrBadSignature = errors.New("bad or missing signature")
	ErrSkew         = errors.New("timestamp outside the allowed skew")
)

// Sign returns the signature header value for body sent at ts.
func Sign(key []byte, ts time.Time, body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(ts.UnixMilli(), 10)
	return timestamp, sigPrefix + hex.EncodeToString(mac(key, timestamp, body))
}

// SignRequest sets the timestamp and signature headers of req for body.
func SignRequest(req *http.Request, key []byte, now time.Time, body []byte) {
	ts, sig := Sign(key, now, body)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, sig)
}

// Verify checks a signature made by Sign with key, and that the timestamp is
// within skew of now. The comparison is constant-time.
//
// Only the canonical encodings Sign writes are accepted: the timestamp in
// decimal without sign or leading zeros, the signature as "v1=" and 64
// lower-case hex digits. So one signed request has exactly one accepted
// signature string, and a receiver may use the header value, as sent, as the
// key of its memory of used requests: an upper-cased copy of a used request
// is refused here, not mistaken for a new one.
func Verify(key []byte, timestamp, signature string, body []byte, now time.Time, skew time.Duration) error {
	_, err := VerifyAnyAt([][]byte{key}, timestamp, signature, body, now, skew)
	return err
}

// VerifyAny is Verify against each of keys, as during a key rollover: it
// succeeds when any key made the signature.
func VerifyAny(keys [][]byte, timestamp, signature string, body []byte, now time.Time, skew time.Duration) error {
	_, err := VerifyAnyAt(keys, timestamp, signature, body, now, skew)
	return err
}

// VerifyAnyAt is VerifyAny that also returns when the request was signed:
// the timestamp is parsed once, here.
func VerifyAnyAt(keys [][]byte, timestamp, signature string, body []byte, now time.Time, skew time.Duration) (time.Time, error) {
	if timestamp == "" || signature == "" {
		return time.Time{}, fmt.Errorf("%w: %s and %s are required", ErrBadSignature, HeaderTimestamp, HeaderSignature)
	}
	got, err := parseSignature(signature)
	if err != nil {
		return time.Time{}, err
	}
	ms, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || strconv.FormatInt(ms, 10) != timestamp {
		return time.Time{}, fmt.Errorf("%w: timestamp %q is not unix milliseconds in decimal", ErrBadSignature, timestamp)
	}
	if len(keys) == 0 {
		return time.Time{}, fmt.Errorf("%w: no key configured", ErrBadSignature)
	}
	signed := false
	for _, k := range keys {
		if hmac.Equal(got, mac(k, timestamp, body)) {
			signed = true
			break
		}
	}
	if !signed {
		return time.Time{}, ErrBadSignature
	}
	// The skew is judged only after the signature holds, so an attacker
	// cannot learn anything about the clock from the answer.
	at := time.UnixMilli(ms)
	if d := now.Sub(at); d > skew || d < -skew {
		return time.Time{}, fmt.Errorf("%w: off by %s (allowed %s)", ErrSkew, d.Round(time.Millisecond), skew)
	}
	return at, nil
}

// parseSignature decodes a signature header in its one canonical form.
func parseSignature(signature string) ([]byte, error) {
	hexSig, ok := strings.CutPrefix(signature, sigPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: signature must start with %q", ErrBadSignature, sigPrefix)
	}
	if len(hexSig) != 2*sha256.Size || strings.ToLower(hexSig) != hexSig {
		return nil, fmt.Errorf("%w: signature must be %q and %d lower-case hex digits", ErrBadSignature, sigPrefix, 2*sha256.Size)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not hex", ErrBadSignature)
	}
	return got, nil
}

func mac(key []byte, timestamp string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(timestamp))
	h.Write([]byte{'\n'})
	h.Write(body)
	return h.Sum(nil)
}

// KeyFileWarning says what is wrong with a key file's permissions, or ""
// when nothing is: a key readable by group or others can be used by anyone
// who can read it to speak for the cluster (or, for the admin key, to drain
// it). It is a warning, not an error: the file works, and deployments that
// share a key through a group-readable secret may mean it.
func KeyFileWarning(path string) string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s is readable or writable by group or others (mode %04o); chmod 600 %s", path, fi.Mode().Perm(), path)
}

// LoadKey reads a key file. Surrounding white space is ignored, so a key
// written by `head -c 32 /dev/urandom | base64 > key` works as it is. Only a
// regular file of at most MaxKeyFileSize bytes is read: key_file pointed at
// /dev/zero or a pipe must be an error, not a hang.
func LoadKey(path string) ([]byte, error) {
	// Non-blocking, so that opening a FIFO does not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(b) > MaxKeyFileSize {
		return nil, fmt.Errorf("key file %s: over %d bytes", path, MaxKeyFileSize)
	}
	key := []byte(strings.TrimSpace(string(b)))
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("key file %s: key is %d bytes, need at least %d", path, len(key), MinKeySize)
	}
	return key, nil
}
