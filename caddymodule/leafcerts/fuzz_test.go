package leafcerts_test

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
)

// FuzzHost feeds arbitrary CONNECT targets and SNI values through the
// Minter. Besides not panicking, a minted leaf must name exactly the host
// asked for, and the SNI check must only pass for a matching name or, for
// IP targets, no name at all.
func FuzzHost(f *testing.F) {
	for _, seed := range [][2]string{
		{"example.com", "example.com"},
		{"Example.COM.", "example.com"},
		{"192.0.2.1", ""},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"fe80::1%eth0", ""},
		{"a b", "a b"},
		{"example.com/x", "example.com"},
		{"*.example.com", "x.example.com"},
		{"1.2.3.04", ""},
		{"k.example", "\u212a.example"},
	} {
		f.Add(seed[0], seed[1])
	}
	ca := newTestCA(f)
	inter := ca.intermediate(f, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))
	m := newMinter(f, newSwappableIssuer(inter).issue, leafcerts.Options{MaxEntries: 100})

	f.Fuzz(func(t *testing.T, host, sni string) {
		cert, err := m.Certificate(host)
		if err != nil {
			if cert != nil || !errors.Is(err, leafcerts.ErrInvalidHost) {
				t.Fatalf("Certificate(%q) = (cert? %v), %v", host, cert != nil, err)
			}
		} else {
			leaf := cert.Leaf
			if n := len(leaf.DNSNames) + len(leaf.IPAddresses); n != 1 {
				t.Fatalf("Certificate(%q): %d SANs, want 1", host, n)
			}
			if err := leaf.VerifyHostname(host); err != nil {
				t.Fatalf("Certificate(%q): leaf does not match host: %v", host, err)
			}
		}

		cert, err = m.GetCertificateFor(host)(&tls.ClientHelloInfo{ServerName: sni})
		if err != nil {
			return
		}
		if cert == nil {
			t.Fatal("GetCertificateFor returned neither certificate nor error")
		}
		if sni == "" {
			if len(cert.Leaf.IPAddresses) != 1 {
				t.Fatalf("target %q served without SNI but is not an IP", host)
			}
			return
		}
		if cert.Leaf.VerifyHostname(sni) != nil {
			t.Fatalf("target %q served for unrelated SNI %q", host, sni)
		}
	})
}
