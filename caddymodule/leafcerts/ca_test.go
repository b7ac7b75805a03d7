package leafcerts_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
)

// testCA is a root plus the machinery to issue intermediates under it.
type testCA struct {
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	pool    *x509.CertPool
}

// issuerCert is an intermediate and its key.
type issuerCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "leafcerts test root"},
		NotBefore:             time.Now().Add(-24 * time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root := createCert(t, tmpl, tmpl, &key.PublicKey, key)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &testCA{root: root, rootKey: key, pool: pool}
}

// intermediate issues an intermediate valid from notBefore to notAfter.
func (ca *testCA) intermediate(t testing.TB, notBefore, notAfter time.Time) issuerCert {
	t.Helper()
	key := newKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "leafcerts test intermediate"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return issuerCert{cert: createCert(t, tmpl, ca.root, &key.PublicKey, ca.rootKey), key: key}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// swappableIssuer plays the part of Caddy's CA, whose intermediate can be
// renewed while the Minter is in use.
// Like Caddy, it hands out the same chain slice until renewal.
type swappableIssuer struct {
	mu    sync.RWMutex
	chain []*x509.Certificate
	key   crypto.Signer
}

func newSwappableIssuer(ic issuerCert) *swappableIssuer {
	s := &swappableIssuer{}
	s.set(ic)
	return s
}

func (s *swappableIssuer) set(ic issuerCert) {
	s.mu.Lock()
	s.chain, s.key = []*x509.Certificate{ic.cert}, ic.key
	s.mu.Unlock()
}

func (s *swappableIssuer) issue() ([]*x509.Certificate, crypto.Signer) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.chain, s.key
}

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// testNow is a whole-second instant so certificate times (which have
// second precision) compare exactly.
func testNow() time.Time {
	return time.Now().Truncate(time.Second)
}

func newMinter(t testing.TB, issuer leafcerts.IssuerFunc, opts leafcerts.Options) *leafcerts.Minter {
	t.Helper()
	m, err := leafcerts.New(issuer, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}
