package report

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

const goodBody = `{"version":1,"cluster":"east","boot_id":"b1","sequence":7,"sent_at":"2026-11-22T10:00:00.123456Z","healthy":false,"interval_ms":100,"checks":[{"name":"pods","kind":"exec","healthy":false,"critical":true,"observed_at":"2026-11-22T10:00:00.101Z","duration_ms":31,"detail":"container web-1 is Exited"}]}`

func TestDecode(t *testing.T) {
	r, err := Decode([]byte(goodBody))
	if err != nil {
		t.Fatal(err)
	}
	if r.Cluster != "east" || r.Sequence != 7 || r.Healthy || len(r.Checks) != 1 || r.Checks[0].Detail != "container web-1 is Exited" {
		t.Errorf("decoded %+v", r)
	}
	tests := []struct {
		name, body, want string
	}{
		{"not json", `{`, "unexpected EOF"},
		{"wrong version", strings.Replace(goodBody, `"version":1`, `"version":2`, 1), "version 2, want 1"},
		{"no cluster", strings.Replace(goodBody, `"cluster":"east"`, `"cluster":""`, 1), "cluster is empty"},
		{"no boot id", strings.Replace(goodBody, `"boot_id":"b1"`, `"boot_id":""`, 1), "boot_id is empty"},
		{"zero sequence", strings.Replace(goodBody, `"sequence":7`, `"sequence":0`, 1), "sequence must be at least 1"},
		{"unknown field", strings.Replace(goodBody, `"healthy":false,`, `"healthy":false,"helthy":true,`, 1), `member "helthy": unknown`},
		{"trailing data", goodBody + `{}`, "trailing data"},
		{"negative interval", strings.Replace(goodBody, `"interval_ms":100`, `"interval_ms":-1`, 1), "interval_ms is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.body))
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrMalformed containing %q", err, tc.want)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := Report{Version: 1, Cluster: "west", BootID: "x", Sequence: 3, SentAt: time.UnixMilli(1700000000123).UTC(), Healthy: true, IntervalMS: 100}
	b, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !out.SentAt.Equal(in.SentAt) || out.Cluster != in.Cluster || out.Sequence != in.Sequence || !out.Healthy {
		t.Errorf("round trip: %+v != %+v", out, in)
	}
}

func TestVerify(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	body := []byte(goodBody)
	ts, sig := Sign(testKey, now, body)
	if err := Verify(testKey, ts, sig, body, now.Add(time.Second), DefaultSkew); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	tamperedSig := sig[:len(sig)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", sig[len(sig)-1])+1)%16])
	tests := []struct {
		name, ts, sig string
		body          []byte
		key           []byte
		now           time.Time
		want          error
	}{
		{"missing signature", ts, "", body, testKey, now, ErrBadSignature},
		{"missing timestamp", "", sig, body, testKey, now, ErrBadSignature},
		{"no prefix", ts, strings.TrimPrefix(sig, "v1="), body, testKey, now, ErrBadSignature},
		{"not hex", ts, "v1=zz", body, testKey, now, ErrBadSignature},
		{"tampered signature", ts, tamperedSig, body, testKey, now, ErrBadSignature},
		{"tampered body", ts, sig, append([]byte(nil), strings.Replace(goodBody, "false", "true", 1)...), testKey, now, ErrBadSignature},
		{"other key", ts, sig, body, []byte("another key of 16+ bytes"), now, ErrBadSignature},
		{"timestamp changed", "1800000000001", sig, body, testKey, now, ErrBadSignature},
		// One signed request has one accepted signature string: the receiver's
		// memory of used requests keys on it.
		{"signature upper-cased", ts, "v1=" + strings.ToUpper(sig[3:]), body, testKey, now, ErrBadSignature},
		{"prefix upper-cased", ts, "V1=" + sig[3:], body, testKey, now, ErrBadSignature},
		{"signature truncated", ts, sig[:len(sig)-2], body, testKey, now, ErrBadSignature},
		{"timestamp with a plus sign", "+" + ts, sig, body, testKey, now, ErrBadSignature},
		{"timestamp with a leading zero", "0" + ts, sig, body, testKey, now, ErrBadSignature},
		{"too old", ts, sig, body, testKey, now.Add(DefaultSkew + time.Millisecond), ErrSkew},
		{"from the future", ts, sig, body, testKey, now.Add(-DefaultSkew - time.Millisecond), ErrSkew},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.key, tc.ts, tc.sig, tc.body, tc.now, DefaultSkew)
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// The signature is specified byte for byte so that `openssl dgst` can make one.
func TestSignKnownVector(t *testing.T) {
	ts, sig := Sign([]byte("key-key-key-key-"), time.UnixMilli(1000), []byte("{}"))
	// printf '1000\n{}' | openssl dgst -sha256 -hmac key-key-key-key-
	const want = "v1=5ed1a6989553165974669b2b4cc9749c282c2a72269872ce384a11e1f3f8d50f"
	if ts != "1000" {
		t.Errorf("timestamp = %s", ts)
	}
	if sig != want {
		t.Errorf("signature = %s, want %s (openssl)", sig, want)
	}
}

func TestVerifyAny(t *testing.T) {
	now := time.Now()
	oldKey, newKey := []byte("old-key-0123456789"), []byte("new-key-0123456789")
	body := []byte(goodBody)
	for _, signer := range [][]byte{oldKey, newKey} {
		ts, sig := Sign(signer, now, body)
		if err := VerifyAny([][]byte{newKey, oldKey}, ts, sig, body, now, DefaultSkew); err != nil {
			t.Errorf("signed with %s: %v", signer, err)
		}
	}
	ts, sig := Sign([]byte("third-key-0123456789"), now, body)
	if err := VerifyAny([][]byte{newKey, oldKey}, ts, sig, body, now, DefaultSkew); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a key not in the list: %v", err)
	}
	if err := VerifyAny(nil, ts, sig, body, now, DefaultSkew); !errors.Is(err, ErrBadSignature) {
		t.Errorf("no keys: %v", err)
	}
	ts, sig = Sign(oldKey, now.Add(-time.Hour), body)
	if err := VerifyAny([][]byte{newKey, oldKey}, ts, sig, body, now, DefaultSkew); !errors.Is(err, ErrSkew) {
		t.Errorf("valid old signature, stale timestamp: %v", err)
	}
}

func TestKeyFileWarning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(path, []byte("0123456789abcdef0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{
		{0o600, ""},
		{0o400, ""},
		{0o640, "(mode 0640); chmod 600 " + path},
		{0o604, "(mode 0604)"},
		{0o620, "(mode 0620)"},
	} {
		os.Chmod(path, tc.mode)
		got := KeyFileWarning(path)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("mode %04o: %q, want %q", tc.mode, got, tc.want)
		}
	}
	if got := KeyFileWarning(path + ".missing"); got != "" {
		t.Errorf("missing file: %q (LoadKey reports it)", got)
	}
}

func TestLoadKeyRefusesWhatIsNotAKeyFile(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, []byte(strings.Repeat("k", MaxKeyFileSize+1)), 0o600)
	for path, want := range map[string]string{
		"/dev/zero":         "key file /dev/zero: not a regular file",
		t.TempDir():         "not a regular file",
		big:                 "over 4096 bytes",
		"/no/such/key/file": "open /no/such/key/file: no such file or directory",
	} {
		if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadKey(%s) = %v, want %q", path, err, want)
		}
	}
}

func TestLoadKeyFIFODoesNotHang(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() { _, err := LoadKey(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("LoadKey(fifo) = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LoadKey blocks on a FIFO")
	}
}
