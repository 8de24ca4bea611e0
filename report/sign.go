package report

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
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

// MinKeySize is the shortest key LoadKey accepts.
const MinKeySize = 16

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
	hexSig, ok := strings.CutPrefix(signature, sigPrefix)
	if !ok {
		return time.Time{}, fmt.Errorf("%w: signature must start with %q", ErrBadSignature, sigPrefix)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: signature is not hex", ErrBadSignature)
	}
	ms, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: timestamp %q is not unix milliseconds", ErrBadSignature, timestamp)
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

func mac(key []byte, timestamp string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(timestamp))
	h.Write([]byte{'\n'})
	h.Write(body)
	return h.Sum(nil)
}

// LoadKey reads a key file. Surrounding white space is ignored, so a key
// written by `head -c 32 /dev/urandom | base64 > key` works as it is.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	key := []byte(strings.TrimSpace(string(b)))
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("key file %s: key is %d bytes, need at least %d", path, len(key), MinKeySize)
	}
	return key, nil
}
