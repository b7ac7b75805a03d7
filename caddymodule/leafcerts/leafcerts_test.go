package leafcerts_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
)

func TestLeafVerifiesAndHasExactSANs(t *testing.T) {
	now := testNow()
	ca := newTestCA(t)
	inter := ca.intermediate(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	m := newMinter(t, newSwappableIssuer(inter).issue, leafcerts.Options{Now: func() time.Time { return now }})

	tests := []struct {
		host string
		ip   net.IP // nil for DNS names
	}{
		{host: "example.com"},
		{host: "localhost"},
		{host: "api_v2.internal-host.example"},
		{host: "192.0.2.1", ip: net.ParseIP("192.0.2.1")},
		{host: "2001:db8::1", ip: net.ParseIP("2001:db8::1")},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cert, err := m.Certificate(tt.host)
			if err != nil {
				t.Fatalf("Certificate: %v", err)
			}
			leaf := cert.Leaf
			if leaf == nil {
				t.Fatal("Leaf not set")
			}

			intermediates := x509.NewCertPool()
			intermediates.AddCert(inter.cert)
			if _, err := leaf.Verify(x509.VerifyOptions{
				DNSName:       tt.host,
				Roots:         ca.pool,
				Intermediates: intermediates,
				CurrentTime:   now,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				t.Fatalf("leaf does not verify: %v", err)
			}

			if tt.ip == nil {
				if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != tt.host || len(leaf.IPAddresses) != 0 {
					t.Errorf("SANs = DNS %v IP %v, want DNS [%s] only", leaf.DNSNames, leaf.IPAddresses, tt.host)
				}
			} else {
				if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(tt.ip) || len(leaf.DNSNames) != 0 {
					t.Errorf("SANs = DNS %v IP %v, want IP [%s] only", leaf.DNSNames, leaf.IPAddresses, tt.ip)
				}
			}
			if len(leaf.EmailAddresses) != 0 || len(leaf.URIs) != 0 {
				t.Errorf("unexpected SANs: email %v URI %v", leaf.EmailAddresses, leaf.URIs)
			}
			if leaf.Subject.CommonName != tt.host {
				t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, tt.host)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %v, want DigitalSignature only", leaf.KeyUsage)
			}
			if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
				t.Errorf("ExtKeyUsage = %v, want [ServerAuth]", leaf.ExtKeyUsage)
			}
			if !leaf.BasicConstraintsValid || leaf.IsCA {
				t.Errorf("BasicConstraints valid=%v CA=%v, want valid non-CA", leaf.BasicConstraintsValid, leaf.IsCA)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", leaf.SerialNumber)
			}
			if want := now.Add(-time.Minute); !leaf.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, want)
			}
			if want := now.Add(leafcerts.DefaultLifetime); !leaf.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %v, want %v", leaf.NotAfter, want)
			}

			if len(cert.Certificate) != 2 || string(cert.Certificate[0]) != string(leaf.Raw) ||
				string(cert.Certificate[1]) != string(inter.cert.Raw) {
				t.Errorf("chain is not [leaf, intermediate] (len %d)", len(cert.Certificate))
			}
			key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
			if !ok || key.Curve != elliptic.P256() {
				t.Fatalf("PrivateKey is %T, want ECDSA P-256", cert.PrivateKey)
			}
			if !key.PublicKey.Equal(leaf.PublicKey) {
				t.Error("PrivateKey does not match the leaf's public key")
			}
		})
	}
}

func TestDistinctHostsGetDistinctKeysAndSerials(t *testing.T) {
	ca := newTestCA(t)
	m := newMinter(t, newSwappableIssuer(ca.intermediate(t, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))).issue, leafcerts.Options{})
	a, err := m.Certificate("a.example")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Certificate("b.example")
	if err != nil {
		t.Fatal(err)
	}
	if a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
		t.Error("two leaves share a serial number")
	}
	if a.PrivateKey.(crypto.Signer).Public().(*ecdsa.PublicKey).Equal(b.PrivateKey.(crypto.Signer).Public()) {
		t.Error("two hosts share a key")
	}
}

func TestHostsAreCanonicalized(t *testing.T) {
	ca := newTestCA(t)
	m := newMinter(t, newSwappableIssuer(ca.intermediate(t, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))).issue, leafcerts.Options{})

	sameAs := map[string]string{
		"Example.COM.":     "example.com",
		"example.com.":     "example.com",
		"2001:DB8:0::1":    "2001:db8::1",
		"::ffff:192.0.2.7": "192.0.2.7",
	}
	for input, canonical := range sameAs {
		want, err := m.Certificate(canonical)
		if err != nil {
			t.Fatalf("Certificate(%q): %v", canonical, err)
		}
		got, err := m.Certificate(input)
		if err != nil {
			t.Fatalf("Certificate(%q): %v", input, err)
		}
		if got != want {
			t.Errorf("Certificate(%q) is not the cached leaf for %q", input, canonical)
		}
	}
	if _, mints := m.Stats(); mints != uint64(len(sameAs)-1) { // two inputs share example.com
		t.Errorf("mints = %d, want %d", mints, len(sameAs)-1)
	}
}

func TestInvalidHostsAreRejected(t *testing.T) {
	ca := newTestCA(t)
	m := newMinter(t, newSwappableIssuer(ca.intermediate(t, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))).issue, leafcerts.Options{})

	label63 := strings.Repeat("a", 63)
	longest := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".") // 253 bytes
	for _, host := range []string{longest, longest + "."} {
		if _, err := m.Certificate(host); err != nil {
			t.Fatalf("253-byte name rejected: %v", err)
		}
	}

	for _, host := range []string{
		"",
		".",
		" ",
		"exa mple.com",
		"example.com/path",
		"example.com:443",
		"[::1]",
		"*.example.com",
		"a..b",
		"-.example",
		"a.-b.example",
		".example.com",
		"example.com..",
		"fe80::1%eth0",
		"1.2.3.04",
		"999",
		"host.123",
		"host.0x1f", // read as IPv4 by URL parsers, like "host.123"
		"192.0.2.1.",
		"héllo.example",
		"nul\x00.example",
		strings.Repeat("a", 64) + ".example",
		longest + "c",
		longest + "..",
		strings.Repeat("x", 1<<20),
	} {
		cert, err := m.Certificate(host)
		if !errors.Is(err, leafcerts.ErrInvalidHost) || cert != nil {
			t.Errorf("Certificate(%.40q) = (cert? %v), %v; want ErrInvalidHost", host, cert != nil, err)
			continue
		}
		var he *hostname.Error
		if !errors.As(err, &he) || !strings.HasSuffix(err.Error(), ": "+he.Reason) {
			t.Errorf("Certificate(%.40q) error %q does not carry a hostname reason", host, err)
		}
		if len(err.Error()) > 300 {
			t.Errorf("Certificate(%.40q): %d-byte error message", host, len(err.Error()))
		}
	}
	if len(longest) != 253 {
		t.Fatalf("test bug: longest is %d bytes", len(longest))
	}
}

func TestLifetimeIsClampedToIssuer(t *testing.T) {
	now := testNow()
	ca := newTestCA(t)
	clock := func() time.Time { return now }

	t.Run("expires in 2h", func(t *testing.T) {
		inter := ca.intermediate(t, now.Add(-time.Hour), now.Add(2*time.Hour))
		m := newMinter(t, newSwappableIssuer(inter).issue, leafcerts.Options{Lifetime: 24 * time.Hour, Now: clock})
		cert, err := m.Certificate("example.com")
		if err != nil {
			t.Fatal(err)
		}
		if !cert.Leaf.NotAfter.Equal(inter.cert.NotAfter) {
			t.Errorf("NotAfter = %v, want intermediate's %v", cert.Leaf.NotAfter, inter.cert.NotAfter)
		}
	})
	t.Run("issued seconds ago", func(t *testing.T) {
		inter := ca.intermediate(t, now.Add(-10*time.Second), now.Add(48*time.Hour))
		m := newMinter(t, newSwappableIssuer(inter).issue, leafcerts.Options{Now: clock})
		cert, err := m.Certificate("example.com")
		if err != nil {
			t.Fatal(err)
		}
		if !cert.Leaf.NotBefore.Equal(inter.cert.NotBefore) {
			t.Errorf("NotBefore = %v, want intermediate's %v", cert.Leaf.NotBefore, inter.cert.NotBefore)
		}
	})
	t.Run("expires in 30s", func(t *testing.T) {
		inter := ca.intermediate(t, now.Add(-time.Hour), now.Add(30*time.Second))
		m := newMinter(t, newSwappableIssuer(inter).issue, leafcerts.Options{Now: clock})
		cert, err := m.Certificate("example.com")
		if !errors.Is(err, leafcerts.ErrIssuerExpiresSoon) || cert != nil {
			t.Fatalf("got (cert? %v), %v; want ErrIssuerExpiresSoon", cert != nil, err)
		}
		if !strings.Contains(err.Error(), "issuing CA certificate expires too soon") {
			t.Errorf("error %q lacks the expected text", err)
		}
	})
	t.Run("already expired", func(t *testing.T) {
		inter := ca.intermediate(t, now.Add(-2*time.Hour), now.Add(-time.Hour))
		m := newMinter(t, newSwappableIssuer(inter).issue, leafcerts.Options{Now: clock})
		if _, err := m.Certificate("example.com"); !errors.Is(err, leafcerts.ErrIssuerExpiresSoon) {
			t.Fatalf("err = %v, want ErrIssuerExpiresSoon", err)
		}
	})
	t.Run("not yet valid", func(t *testing.T) {
		inter := ca.intermediate(t, now.Add(time.Hour), now.Add(48*time.Hour))
		m := newMinter(t, newSwappableIssuer(inter).issue, leafcerts.Options{Now: clock})
		if _, err := m.Certificate("example.com"); err == nil {
			t.Fatal("minted a leaf from an intermediate that is not valid yet")
		}
	})
}

func TestIssuerRenewalInvalidatesCache(t *testing.T) {
	now := testNow()
	ca := newTestCA(t)
	oldInter := ca.intermediate(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	issuer := newSwappableIssuer(oldInter)
	m := newMinter(t, issuer.issue, leafcerts.Options{Now: func() time.Time { return now }})

	first, err := m.Certificate("example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Certificate("other.example"); err != nil {
		t.Fatal(err)
	}

	// The same certificate parsed again is a different pointer with the same
	// bytes: that is not a renewal.
	reparsed, err := x509.ParseCertificate(oldInter.cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	issuer.set(issuerCert{cert: reparsed, key: oldInter.key})
	if again, err := m.Certificate("example.com"); err != nil || again != first {
		t.Fatalf("re-parsed identical issuer caused a new leaf (err %v)", err)
	}

	newInter := ca.intermediate(t, now.Add(-time.Minute), now.Add(7*24*time.Hour))
	issuer.set(newInter)
	for _, host := range []string{"example.com", "other.example"} {
		cert, err := m.Certificate(host)
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.Leaf.CheckSignatureFrom(newInter.cert); err != nil {
			t.Errorf("%s: leaf not signed by the renewed intermediate: %v", host, err)
		}
		if string(cert.Certificate[1]) != string(newInter.cert.Raw) {
			t.Errorf("%s: chain does not carry the renewed intermediate", host)
		}
	}
	if _, mints := m.Stats(); mints != 4 {
		t.Errorf("mints = %d, want 4", mints)
	}
}

func TestEarlyRenewal(t *testing.T) {
	start := testNow()
	clock := &fakeClock{now: start}
	ca := newTestCA(t)
	inter := ca.intermediate(t, start.Add(-time.Hour), start.Add(30*24*time.Hour))
	m := newMinter(t, newSwappableIssuer(inter).issue, leafcerts.Options{Lifetime: 3 * time.Hour, Now: clock.Now})

	first, err := m.Certificate("example.com")
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	renewAt := leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3)

	clock.Set(renewAt.Add(-time.Second))
	if cert, err := m.Certificate("example.com"); err != nil || cert != first {
		t.Fatalf("leaf with more than a third of its life left was not reused (err %v)", err)
	}
	clock.Set(renewAt)
	second, err := m.Certificate("example.com")
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("leaf with a third of its life left was reused")
	}
	if !second.Leaf.NotAfter.Equal(renewAt.Add(3 * time.Hour)) {
		t.Errorf("renewed NotAfter = %v, want %v", second.Leaf.NotAfter, renewAt.Add(3*time.Hour))
	}
	if hits, mints := m.Stats(); hits != 1 || mints != 2 {
		t.Errorf("Stats = %d hits, %d mints; want 1, 2", hits, mints)
	}
}

func TestConcurrentCallsCollapseIntoOneMint(t *testing.T) {
	const callers = 50
	ca := newTestCA(t)
	inner := newSwappableIssuer(ca.intermediate(t, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour)))

	// Every caller reads the issuer before it can mint. Holding them all
	// there until the last one arrives proves they are in Certificate at
	// the same time for a host nobody has minted yet.
	var arrived atomic.Int32
	allArrived := make(chan struct{})
	gated := func() ([]*x509.Certificate, crypto.Signer) {
		if arrived.Add(1) == callers {
			close(allArrived)
		}
		<-allArrived
		return inner.issue()
	}
	m := newMinter(t, gated, leafcerts.Options{})

	certs := make([]*tls.Certificate, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { certs[i], errs[i] = m.Certificate("collapse.example") })
	}
	wg.Wait()

	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if certs[i] != certs[0] {
			t.Fatalf("caller %d got a different certificate", i)
		}
	}
	if hits, mints := m.Stats(); mints != 1 || hits != callers-1 {
		t.Errorf("Stats = %d hits, %d mints; want %d, 1", hits, mints, callers-1)
	}
}

func TestIssuerProblemsFailClosedAndAreNotCached(t *testing.T) {
	now := testNow()
	ca := newTestCA(t)
	good := ca.intermediate(t, now.Add(-time.Hour), now.Add(48*time.Hour))
	stranger := ca.intermediate(t, now.Add(-time.Hour), now.Add(48*time.Hour))

	var chain []*x509.Certificate
	var key crypto.Signer
	m := newMinter(t, func() ([]*x509.Certificate, crypto.Signer) { return chain, key }, leafcerts.Options{Now: func() time.Time { return now }})

	if _, err := m.Certificate("example.com"); !errors.Is(err, leafcerts.ErrNoIssuer) {
		t.Errorf("no issuer: err = %v, want ErrNoIssuer", err)
	}
	chain = []*x509.Certificate{good.cert}
	if _, err := m.Certificate("example.com"); !errors.Is(err, leafcerts.ErrNoIssuer) {
		t.Errorf("no key: err = %v, want ErrNoIssuer", err)
	}
	chain, key = []*x509.Certificate{good.cert, nil}, good.key
	if _, err := m.Certificate("example.com"); !errors.Is(err, leafcerts.ErrNoIssuer) {
		t.Errorf("nil chain element: err = %v, want ErrNoIssuer", err)
	}
	// A key that does not belong to chain[0], as when a renewal lands
	// between reading the chain and reading the key.
	chain, key = []*x509.Certificate{good.cert}, stranger.key
	if _, err := m.Certificate("example.com"); err == nil {
		t.Error("minted with a key that does not match the issuing certificate")
	}
	// A non-CA certificate must not be used as issuer.
	chain, key = []*x509.Certificate{ca.root}, ca.rootKey
	leafAsIssuer, err := m.Certificate("leaf.example")
	if err != nil {
		t.Fatal(err)
	}
	chain, key = []*x509.Certificate{leafAsIssuer.Leaf}, leafAsIssuer.PrivateKey.(crypto.Signer)
	if _, err := m.Certificate("example.com"); err == nil {
		t.Error("minted with a non-CA issuing certificate")
	}

	chain, key = []*x509.Certificate{good.cert}, good.key
	cert, err := m.Certificate("example.com")
	if err != nil {
		t.Fatalf("after fixing the issuer: %v", err)
	}
	if err := cert.Leaf.CheckSignatureFrom(good.cert); err != nil {
		t.Error(err)
	}
	// A cached leaf is not served once the issuer disappears.
	chain = nil
	if cert, err := m.Certificate("example.com"); err == nil || cert != nil {
		t.Error("served a cached leaf without an issuer")
	}
}

func TestGetCertificateFor(t *testing.T) {
	ca := newTestCA(t)
	m := newMinter(t, newSwappableIssuer(ca.intermediate(t, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))).issue, leafcerts.Options{})

	tests := []struct {
		target, sni string
		ok          bool
	}{
		{"example.com", "example.com", true},
		{"example.com", "EXAMPLE.com.", true},
		{"Example.com.", "example.com", true},
		{"example.com", "other.example", false},
		{"example.com", "example.com.evil", false},
		{"example.com", "", false},
		{"192.0.2.1", "", true},
		{"192.0.2.1", "192.0.2.1", true},
		{"192.0.2.1", "example.com", false},
		{"2001:db8::1", "", true},
		// The Kelvin sign folds to 'k' under Unicode rules, not under ASCII.
		{"k.example", "\u212a.example", false},
	}
	for _, tt := range tests {
		cert, err := m.GetCertificateFor(tt.target)(&tls.ClientHelloInfo{ServerName: tt.sni})
		if tt.ok {
			if err != nil || cert == nil {
				t.Errorf("target %q, SNI %q: %v", tt.target, tt.sni, err)
			}
			continue
		}
		var mismatch *leafcerts.SNIMismatchError
		if !errors.As(err, &mismatch) || cert != nil {
			t.Errorf("target %q, SNI %q: got (cert? %v), %v; want SNIMismatchError", tt.target, tt.sni, cert != nil, err)
			continue
		}
		want := `TLS SNI "` + tt.sni + `" does not match CONNECT target`
		if tt.sni == "\u212a.example" {
			want = `does not match CONNECT target "k.example"`
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}

	if _, err := m.GetCertificateFor("bad host")(&tls.ClientHelloInfo{ServerName: "bad host"}); !errors.Is(err, leafcerts.ErrInvalidHost) {
		t.Errorf("invalid target: err = %v, want ErrInvalidHost", err)
	}
	if _, err := m.GetCertificateFor("example.com")(nil); err == nil {
		t.Error("nil ClientHelloInfo accepted for a DNS target")
	}
}

func TestHandshakeOverLoopback(t *testing.T) {
	ca := newTestCA(t)
	m := newMinter(t, newSwappableIssuer(ca.intermediate(t, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))).issue, leafcerts.Options{})

	tests := []struct {
		target, serverName string
		ok                 bool
	}{
		{"localhost", "localhost", true},
		{"localhost", "other", false},
		{"127.0.0.1", "127.0.0.1", true}, // Go sends no SNI for IPs; the IP SAN is verified
		{"127.0.0.1", "localhost", false},
	}
	for _, tt := range tests {
		t.Run(tt.target+"/"+tt.serverName, func(t *testing.T) {
			serverErr, clientErr := handshake(t, ca, m.GetCertificateFor(tt.target), tt.serverName)
			if tt.ok {
				if serverErr != nil || clientErr != nil {
					t.Fatalf("handshake failed: server %v, client %v", serverErr, clientErr)
				}
				return
			}
			var mismatch *leafcerts.SNIMismatchError
			if !errors.As(serverErr, &mismatch) {
				t.Errorf("server error = %v, want SNIMismatchError", serverErr)
			}
			if clientErr == nil {
				t.Error("client handshake succeeded")
			}
		})
	}
}

// handshake runs one TLS handshake over a loopback connection and returns
// both sides' errors.
func handshake(t *testing.T, ca *testCA, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), serverName string) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	serverDone := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			serverDone <- err
			return
		}
		defer conn.Close()
		serverDone <- tls.Server(conn, &tls.Config{GetCertificate: getCert}).Handshake()
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Client(conn, &tls.Config{RootCAs: ca.pool, ServerName: serverName})
	clientErr = client.Handshake()
	client.Close()
	return <-serverDone, clientErr
}

func TestNewValidatesOptions(t *testing.T) {
	issuer := func() ([]*x509.Certificate, crypto.Signer) { return nil, nil }
	for name, tc := range map[string]struct {
		issuer leafcerts.IssuerFunc
		opts   leafcerts.Options
	}{
		"nil issuer":           {nil, leafcerts.Options{}},
		"negative lifetime":    {issuer, leafcerts.Options{Lifetime: -time.Hour}},
		"too short lifetime":   {issuer, leafcerts.Options{Lifetime: 30 * time.Second}},
		"negative max entries": {issuer, leafcerts.Options{MaxEntries: -1}},
	} {
		if m, err := leafcerts.New(tc.issuer, tc.opts); err == nil || m != nil {
			t.Errorf("%s: New = %v, %v; want error", name, m, err)
		}
	}
	if _, err := leafcerts.New(issuer, leafcerts.Options{}); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}

func TestDefaultLifetime(t *testing.T) {
	now := testNow()
	ca := newTestCA(t)
	m := newMinter(t, newSwappableIssuer(ca.intermediate(t, now.Add(-time.Hour), now.Add(48*time.Hour))).issue,
		leafcerts.Options{Now: func() time.Time { return now }})
	cert, err := m.Certificate("example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Leaf.NotAfter.Sub(now); got != 24*time.Hour {
		t.Errorf("default lifetime = %v, want 24h", got)
	}
}

func TestMaxEntriesBound(t *testing.T) {
	const maxEntries = 3
	ca := newTestCA(t)
	m := newMinter(t, newSwappableIssuer(ca.intermediate(t, time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))).issue,
		leafcerts.Options{MaxEntries: maxEntries})

	hosts := make([]string, 10)
	for i := range hosts {
		hosts[i] = "h" + strconv.Itoa(i) + ".example"
		if _, err := m.Certificate(hosts[i]); err != nil {
			t.Fatal(err)
		}
		if n := leafcerts.CachedEntries(m); n > maxEntries {
			t.Fatalf("cache holds %d entries, bound is %d", n, maxEntries)
		}
	}
	if n := leafcerts.CachedEntries(m); n != maxEntries {
		t.Errorf("cache holds %d entries after 10 hosts, want %d", n, maxEntries)
	}
	// The newest host is always kept.
	last, _ := m.Certificate(hosts[len(hosts)-1])
	if again, _ := m.Certificate(hosts[len(hosts)-1]); again != last {
		t.Error("most recently minted host was evicted")
	}
}
