package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthswitch/healthswitch/internal/testutil"
)

// pki is a throwaway CA with certificates written as PEM files.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CAFile is the CA certificate.
	CAFile string
}

func newPKI(t *testing.T, name string) *pki {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: t.TempDir(), cert: cert, key: key}
	p.CAFile = p.write(name+"-ca.crt", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, typ string, der []byte) string {
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return f
}

// issue writes a certificate for cn (server and client use, valid for
// 127.0.0.1) and its key, and returns their files.
func (p *pki) issue(cn string, serial int64) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return p.write(cn+".crt", "CERTIFICATE", der), p.write(cn+".key", "EC PRIVATE KEY", kder)
}

func (p *pki) tlsConfig(certFile, keyFile string) *tls.Config {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		p.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}
}

// The store reaches an etcd that requires client certificates with `tls
// CERT KEY CA`; without a certificate of that CA it cannot.
func TestEtcdTLSClientCertificate(t *testing.T) {
	ca := newPKI(t, "hs-test")
	srvCert, srvKey := ca.issue("etcd", 2)
	cliCert, cliKey := ca.issue("healthswitch", 3)
	ec := testutil.StartEtcdTLS(t, 1, &testutil.EtcdTLS{CertFile: srvCert, KeyFile: srvKey, CAFile: ca.CAFile,
		Client: ca.tlsConfig(cliCert, cliKey)})
	s, err := NewEtcd(EtcdOptions{Endpoints: ec.Endpoints(), Prefix: "/tls", Replica: "a",
		CertFile: cliCert, KeyFile: cliKey, CAFile: ca.CAFile, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Load(ctxWithin(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDrain(ctx, "east", Drain{Drained: true}); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}

	other := newPKI(t, "not-etcds-ca")
	badCert, badKey := other.issue("intruder", 4)
	for name, o := range map[string]EtcdOptions{
		"no client certificate":          {CAFile: ca.CAFile},
		"client certificate of other CA": {CertFile: badCert, KeyFile: badKey, CAFile: ca.CAFile},
		"server not trusted":             {CertFile: cliCert, KeyFile: cliKey, CAFile: other.CAFile},
	} {
		t.Run(name, func(t *testing.T) {
			o.Endpoints, o.Prefix, o.Replica, o.OpTimeout = ec.Endpoints(), "/tls", "b", 500*time.Millisecond
			o.Logger = slog.New(slog.DiscardHandler)
			s, err := NewEtcd(o)
			if err != nil {
				return // refused at once: fine
			}
			defer s.Close()
			if _, err := s.Load(ctxWithin(t, time.Second)); err == nil {
				t.Fatal("listed etcd without a valid TLS setup")
			}
			if err := s.PutDrain(ctx, "east", Drain{}); err == nil {
				t.Fatal("wrote to etcd without a valid TLS setup")
			}
		})
	}
}

// With etcd's auth on, `username` and `password_file` log in, and the
// user's role limits it to its prefix.
func TestEtcdPasswordAuth(t *testing.T) {
	ec := testutil.StartEtcd(t, 1)
	root := ec.Client()
	steps := []func() error{
		func() error { _, err := root.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := root.UserAdd(ctx, "hs", "s3cret"); return err },
		func() error { _, err := root.RoleAdd(ctx, "hs"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "hs", "/auth/", clientv3.GetPrefixRangeEnd("/auth/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx, "hs", "hs"); return err },
		func() error { _, err := root.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	open := func(prefix, pwFile string) (*EtcdStore, error) {
		s, err := NewEtcd(EtcdOptions{Endpoints: ec.Endpoints(), Prefix: prefix, Replica: "a", Username: "hs", PasswordFile: pwFile,
			OpTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			t.Cleanup(func() { s.Close() })
		}
		return s, err
	}
	s, err := open("/auth", pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctxWithin(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDrain(ctx, "east", Drain{Drained: true}); err != nil {
		t.Fatalf("put as hs under its prefix: %v", err)
	}
	testutil.WaitFor(t, 3*time.Second, "presence under auth", func() bool { return len(replicas(t, s)) == 1 })

	if s, err := open("/elsewhere", pw); err == nil {
		if err := s.PutDrain(ctx, "east", Drain{}); err == nil {
			t.Fatal("hs wrote outside its prefix")
		}
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("nope\n"), 0o600)
	if s, err := open("/auth", wrong); err == nil {
		if err := s.PutDrain(ctx, "east", Drain{}); err == nil {
			t.Fatal("wrote with a wrong password")
		}
	}
}
