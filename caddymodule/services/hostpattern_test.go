package services

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
)

func TestParseHostPatternValid(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"api.github.com", "api.github.com"},
		{"API.GitHub.COM.", "api.github.com"},
		{"  api.github.com  ", "api.github.com"},
		{"*.example.com", "*.example.com"},
		{"*.Example.com.", "*.example.com"},
		{"api.example.com:8443", "api.example.com:8443"},
		{"example.com/api/*", "example.com/api/*"},
		{"example.com:8443/api/*/x", "example.com:8443/api/*/x"},
		{"127.0.0.1:8443", "127.0.0.1:8443"},
		{"127.0.0.1", "127.0.0.1"},
		{"[::1]:8443", "[::1]:8443"},
		{"[::1]", "[::1]"},
		{"[0:0:0:0:0:0:0:1]", "[::1]"},
		{"[2001:DB8::1]/v1/*", "[2001:db8::1]/v1/*"},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1:80"},
		{"my_host.internal", "my_host.internal"},
		{"localhost", "localhost"},
		{"example.com/a%2Fb/*", "example.com/a%2Fb/*"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
	}
	for _, tt := range tests {
		p, err := ParseHostPattern(tt.in)
		if err != nil {
			t.Errorf("ParseHostPattern(%q): %v", tt.in, err)
			continue
		}
		if got := p.String(); got != tt.want {
			t.Errorf("ParseHostPattern(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseHostPatternInvalid(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "empty"},
		{"https://api.github.com", "scheme"},
		{"http://api.github.com/x", "scheme"},
		{"user@api.github.com", "user info"},
		{"user:pw@api.github.com", "user info"},
		{"api.github.com?x=1", "query"},
		{"api.github.com/#frag", "fragment"},
		{"api..github.com", "empty label"},
		{".github.com", "empty label"},
		{"*", "'*'"},
		{"*.com", "two labels"},
		{"*example.com", "'*'"},
		{"api.*.example.com", "'*'"},
		{"*.*.example.com", "'*'"},
		{"**.example.com", "'*'"},
		{"*.1.2.3.4", "IP address"},
		{"api.example.com:0", "port"},
		{"api.example.com:65536", "port"},
		{"api.example.com:08443", "port"},
		{"api.example.com:", "empty port"},
		{"api.example.com:+443", "port"},
		{"api.example.com:https", "port"},
		{"::1", "brackets"},
		{"[::1", "']'"},
		{"[::1]x", "after ']'"},
		{"[fe80::1%25eth0]", "zones"},
		{"[127.0.0.1]", "IPv6"},
		{"127.1", "canonical IPv4"},
		{"127.000.0.1", "canonical IPv4"},
		{"0x7f000001", "canonical IPv4"},
		{"2130706433", "canonical IPv4"},
		{"bücher.example", "non-ASCII"},
		{"api example.com", "whitespace"},
		{"example.com/a b", "whitespace"},
		{"example.com/a\\b", `'\'`},
		{"example.com/a/../b", `".."`},
		{"example.com/a/%2e%2e/b", `".."`},
		{"example.com/%zz", "percent"},
		{"exa$mple.com", "invalid character"},
		{"-x.example.com", "starts with '-'"},
		{"*.-x.example.com", "starts with '-'"},
		{"1.2.3.4.", "canonical IPv4"},
		{"*." + strings.Repeat("a.", 125) + "bc", "at most 251 bytes"},
		{strings.Repeat("a", 64) + ".com", "label longer"},
		{"example.com/" + strings.Repeat("a", 2000), "too long"},
	}
	for _, tt := range tests {
		_, err := ParseHostPattern(tt.in)
		if err == nil {
			t.Errorf("ParseHostPattern(%q) succeeded, want error containing %q", tt.in, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseHostPattern(%q) error %q does not contain %q", tt.in, err, tt.wantErr)
		}
		if !strings.Contains(err.Error(), "invalid host pattern") {
			t.Errorf("ParseHostPattern(%q) error %q does not name the input", tt.in, err)
		}
	}
}

func TestHostPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		host    string
		port    int
		tls     bool
		path    string
		want    bool
	}{
		// Exact hosts.
		{"api.example.com", "api.example.com", 443, true, "/", true},
		{"api.example.com", "api.example.com.evil.net", 443, true, "/", false},
		{"api.example.com", "evilapi.example.com", 443, true, "/", false},
		{"api.example.com", "x.api.example.com", 443, true, "/", false},
		{"API.example.com.", "api.example.com", 443, true, "/", true},
		// Wildcards.
		{"*.example.com", "a.example.com", 443, true, "/", true},
		{"*.example.com", "a.b.example.com", 443, true, "/", true},
		{"*.example.com", "example.com", 443, true, "/", false},
		{"*.example.com", "evil-example.com", 443, true, "/", false},
		{"*.example.com", "example.com.evil.net", 443, true, "/", false},
		{"*.example.com", "a.example.com.evil.net", 443, true, "/", false},
		{"*.example.com", ".example.com", 443, true, "/", false},
		{"*.example.com", "a..example.com", 443, true, "/", false},
		// Port rules: no port means the scheme's default port.
		{"api.example.com", "api.example.com", 80, false, "/", true},
		{"api.example.com", "api.example.com", 443, false, "/", false},
		{"api.example.com", "api.example.com", 80, true, "/", false},
		{"api.example.com", "api.example.com", 8443, true, "/", false},
		{"api.example.com:8443", "api.example.com", 8443, true, "/", true},
		{"api.example.com:8443", "api.example.com", 8443, false, "/", true},
		{"api.example.com:8443", "api.example.com", 443, true, "/", false},
		{"api.example.com:443", "api.example.com", 443, true, "/", true},
		// Paths.
		{"example.com/api/*", "example.com", 443, true, "/api/", true},
		{"example.com/api/*", "example.com", 443, true, "/api/v1/users", true},
		{"example.com/api/*", "example.com", 443, true, "/apix", false},
		{"example.com/api/*", "example.com", 443, true, "/api", false},
		{"example.com/api/*", "example.com", 443, true, "/x/api/y", false},
		{"example.com/api/*", "example.com", 443, true, "", false},
		{"example.com/api/*", "example.com", 443, true, "/api/../admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/%2e%2e/admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/%2E%2E%2fadmin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/..;/admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/..\\admin", false},
		{"example.com/api/*", "example.com", 443, true, "/api/./x", false},
		{"example.com/api/*", "example.com", 443, true, "/api/...", true},
		{"example.com/api/*", "example.com", 443, true, "/api/.well-known", true},
		{"example.com/repos/*/issues", "example.com", 443, true, "/repos/a/b/issues", true},
		{"example.com/repos/*/issues", "example.com", 443, true, "/repos/a/issues/1", false},
		{"example.com/repos/*/issues", "example.com", 443, true, "/repos/issues", false},
		{"example.com/a*a", "example.com", 443, true, "/a", false},
		{"example.com/a*a", "example.com", 443, true, "/aa", true},
		{"example.com/exact", "example.com", 443, true, "/exact", true},
		{"example.com/exact", "example.com", 443, true, "/exact/", false},
		{"example.com/", "example.com", 443, true, "", true},
		{"example.com", "example.com", 443, true, "/anything/../at/all", true},
		// IP literals.
		{"127.0.0.1:8443", "127.0.0.1", 8443, true, "/", true},
		{"127.0.0.1:8443", "127.0.0.2", 8443, true, "/", false},
		{"[::1]:8443", "::1", 8443, true, "/", true},
		{"[::1]:8443", "[::1]", 8443, true, "/", false},
	}
	for _, tt := range tests {
		p, err := ParseHostPattern(tt.pattern)
		if err != nil {
			t.Fatalf("ParseHostPattern(%q): %v", tt.pattern, err)
		}
		if got := p.Match(tt.host, tt.port, tt.tls, tt.path); got != tt.want {
			t.Errorf("%q.Match(%q, %d, tls=%v, %q) = %v, want %v", tt.pattern, tt.host, tt.port, tt.tls, tt.path, got, tt.want)
		}
		if tt.want && !p.MatchHost(tt.host, tt.port, tt.tls) {
			t.Errorf("%q.MatchHost(%q, %d, %v) = false, but Match is true", tt.pattern, tt.host, tt.port, tt.tls)
		}
	}
	// MatchHost ignores the path.
	p, _ := ParseHostPattern("example.com/api/*")
	if !p.MatchHost("example.com", 443, true) || p.Match("example.com", 443, true, "/other") {
		t.Error("MatchHost must ignore the path that Match checks")
	}
	var zero HostPattern
	if zero.Match("", 443, true, "/") || zero.MatchHost("example.com", 443, true) {
		t.Error("zero HostPattern matched")
	}
}

func TestSpecificityOrder(t *testing.T) {
	// Each pattern must be strictly more specific than the one before.
	ordered := []string{
		"*.example.com",
		"*.example.com/*",
		"*.example.com/api/*",
		"*.example.com:8443",
		"*.example.com:8443/api/*",
		"*.api.example.com",
		"*.v1.api.example.com",
		"api.example.com",
		"api.example.com/*",
		"api.example.com/api*",
		"api.example.com/api",
		"api.example.com/api/*",
		"api.example.com/api/v1/*",
		"api.example.com:8443",
		"api.example.com:8443/api/*",
	}
	prev := -1
	for _, s := range ordered {
		p, err := ParseHostPattern(s)
		if err != nil {
			t.Fatal(err)
		}
		if p.Specificity() <= prev {
			t.Errorf("Specificity(%q) = %d, not above the previous pattern's %d", s, p.Specificity(), prev)
		}
		prev = p.Specificity()
	}
	// A long wildcard still loses to a short exact host.
	long, _ := ParseHostPattern("*.a.b.c.d.e.f.g.example.com:8443/very/long/path/*")
	short, _ := ParseHostPattern("x.io")
	if long.Specificity() >= short.Specificity() {
		t.Errorf("wildcard %d >= exact %d", long.Specificity(), short.Specificity())
	}
}

// throwawayCA mints leaves through leafcerts, as the proxy does, under a
// root made for one test.
type throwawayCA struct {
	minter *leafcerts.Minter
	roots  *x509.CertPool
}

func newThrowawayCA(t testing.TB) *throwawayCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "services test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	m, err := leafcerts.New(func() ([]*x509.Certificate, crypto.Signer) {
		return []*x509.Certificate{root}, key
	}, leafcerts.Options{MaxEntries: 64})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	return &throwawayCA{minter: m, roots: roots}
}

// checkLeaf mints a leaf for host and verifies it as a TLS client would,
// for every spelling of host a request may use.
func (ca *throwawayCA) checkLeaf(host string) error {
	cert, err := ca.minter.Certificate(host)
	if err != nil {
		return err
	}
	names := []string{host, host + ".", strings.ToUpper(host)}
	if _, err := netip.ParseAddr(host); err == nil {
		names = []string{host, "[" + host + "]"}
	}
	for _, name := range names {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{
			DNSName:   name,
			Roots:     ca.roots,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return fmt.Errorf("leaf for %q does not verify as %q: %w", host, name, err)
		}
	}
	return nil
}

// certHost is a host the pattern covers: its own host, or for a wildcard
// the shortest name below it.
func certHost(p HostPattern) string {
	if p.wildcard {
		return "a." + p.host
	}
	return p.host
}

// TestPatternHostsGetLeaves: a host accepted when a service is defined
// must not fail at the TLS handshake. FuzzParseHostPattern checks the same
// for arbitrary patterns; these are the edges of the rules.
func TestPatternHostsGetLeaves(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	longest := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".") // 253 bytes
	ca := newThrowawayCA(t)
	for _, s := range []string{
		"api.github.com", "API.Example.COM.:8443/v1/*", "localhost", "my_host.internal",
		"_x.example", "x-.y-.example", "1-2-3-4.example.com", "xn--bcher-kva.example", "example.0xg",
		longest, longest + ".", "*." + longest[2:], "*.a-.example", "*._x.example:8443",
		"127.0.0.1:8443", "[::1]", "[2001:DB8::1]/x", "[::ffff:10.0.0.1]",
	} {
		p, err := ParseHostPattern(s)
		if err != nil {
			t.Errorf("ParseHostPattern(%.40q): %v", s, err)
			continue
		}
		if err := ca.checkLeaf(certHost(p)); err != nil {
			t.Errorf("pattern %.40q: %v", s, err)
		}
	}
}

// TestPatternAndLeafRefuseAlike: hosts that cannot get a leaf are refused
// when the service is defined, for the reason leafcerts gives.
func TestPatternAndLeafRefuseAlike(t *testing.T) {
	ca := newThrowawayCA(t)
	for _, host := range []string{
		"-x.example.com", // accepted by services before
		"x.-y.example.com",
		"1.2.3.4.",  // accepted by services before, as 1.2.3.4
		"host.0x1f", // accepted by leafcerts before
		"a..b", "host.123", "exa$mple.com", strings.Repeat("a", 64) + ".example",
	} {
		_, perr := ParseHostPattern(host)
		_, lerr := ca.minter.Certificate(host)
		var pe, le *hostname.Error
		if !errors.As(perr, &pe) || !errors.As(lerr, &le) {
			t.Errorf("%.40q: pattern error %v, leaf error %v; want both refused by package hostname", host, perr, lerr)
			continue
		}
		if pe.Reason != le.Reason {
			t.Errorf("%.40q: pattern refused for %q, leaf for %q", host, pe.Reason, le.Reason)
		}
		if !errors.Is(lerr, leafcerts.ErrInvalidHost) {
			t.Errorf("%.40q: leaf error %v is not ErrInvalidHost", host, lerr)
		}
	}
	_, err := ParseHostPattern("-x.example.com")
	if err == nil || !strings.Contains(err.Error(), `invalid host pattern "-x.example.com": a label starts with '-'`) {
		t.Errorf("ParseHostPattern(-x.example.com) error %v", err)
	}
}

func TestParseHostPatternErrorIsBounded(t *testing.T) {
	long := "a" + strings.Repeat("$", 5000)
	_, err := ParseHostPattern(long)
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("error for a 5000-byte pattern: %.100v (%d bytes)", err, len(fmt.Sprint(err)))
	}
}

func TestHasDotSegment(t *testing.T) {
	tests := map[string]bool{
		"/":             false,
		"/a/b":          false,
		"/a/.b":         false,
		"/a/b.":         false,
		"/a/...":        false,
		"/a/.":          true,
		"/a/..":         true,
		"/./a":          true,
		"/a/../b":       true,
		"..":            true,
		"/a/%2e/b":      true,
		"/a/%2E%2e/b":   true,
		"/a/.%2e":       true,
		"/a%2f..%2fb":   true,
		"/a%5C..%5cb":   true,
		"/a\\..\\b":     true,
		"/a/..;x=1/b":   true,
		"/a/..%3bx/b":   true,
		"/a/%2e%2e%2e/": false,
		"/a/%2":         false,
		"/a/%":          false,
	}
	for in, want := range tests {
		if got := hasDotSegment(in); got != want {
			t.Errorf("hasDotSegment(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestPathPatternRefusesAmbiguousPaths(t *testing.T) {
	p, err := ParseHostPattern("example.com/*.png")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/admin/delete;.png", "/admin%3bx.png", "/a%2Fb.png", "/a%00.png", "/a%5cb.png"} {
		if p.Match("example.com", 443, true, path) {
			t.Errorf("%s matched %s", path, p)
		}
	}
	for _, path := range []string{"/logo.png", "/img/%41.png"} {
		if !p.Match("example.com", 443, true, path) {
			t.Errorf("%s did not match %s", path, p)
		}
	}
}
