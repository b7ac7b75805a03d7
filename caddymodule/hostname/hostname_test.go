package hostname

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var (
	label63  = strings.Repeat("a", 63)
	longest  = strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".") // 253 bytes
	base251  = longest[2:]                                                                     // room for "a."
	tooLong  = longest + "c"
	manyDots = strings.Repeat("a.", 200) + "com"
)

func TestNormalize(t *testing.T) {
	valid := []struct {
		in       string
		defPort  int
		wantHost string
		wantPort int
	}{
		{"api.github.com", 443, "api.github.com", 443},
		{"API.GitHub.com.", 443, "api.github.com", 443},
		{"api.github.com:8443", 443, "api.github.com", 8443},
		{"Example.COM:80", 443, "example.com", 80},
		{"example.com.:1", 443, "example.com", 1},
		{"example.com:65535", 443, "example.com", 65535},
		{"127.0.0.1", 80, "127.0.0.1", 80},
		{"127.0.0.1:8080", 80, "127.0.0.1", 8080},
		{"[::1]", 443, "::1", 443},
		{"[::1]:8443", 443, "::1", 8443},
		{"[0:0::1]:8443", 443, "::1", 8443},
		{"[2001:DB8::A]", 443, "2001:db8::a", 443},
		{"[::ffff:127.0.0.1]:443", 443, "127.0.0.1", 443},
		{"localhost", 443, "localhost", 443},
		{"1-2-3-4.example.com", 443, "1-2-3-4.example.com", 443},
		{"1.2.3.example", 443, "1.2.3.example", 443},
		{"a-.example.com", 443, "a-.example.com", 443},
		{"_srv.example.com", 443, "_srv.example.com", 443},
		{"example.0xg", 443, "example.0xg", 443},
		{longest, 443, longest, 443},
		{longest + ".:443", 80, longest, 443},
	}
	for _, tt := range valid {
		h, p, err := Normalize(tt.in, tt.defPort)
		if err != nil || h != tt.wantHost || p != tt.wantPort {
			t.Errorf("Normalize(%.40q, %d) = %q, %d, %v; want %q, %d", tt.in, tt.defPort, h, p, err, tt.wantHost, tt.wantPort)
		}
	}
	invalid := []struct{ in, reason string }{
		{"", "empty host"},
		{":443", "empty host"},
		{"[]:443", "IPv6"},
		{"example.com:", "empty port"},
		{"example.com:0", "port"},
		{"example.com:65536", "port"},
		{"example.com:0443", "port"},
		{"example.com:-1", "port"},
		{"example.com:+1", "port"},
		{"example.com:99999999999999999999", "port"},
		{"*.example.com", "'*'"},
		{"a..b", "empty label"},
		{".", "empty host"},
		{"..", "empty label"},
		{"example.com..", "empty label"},
		{"-x.example.com", "starts with '-'"},
		{"x.-y.example.com", "starts with '-'"},
		{"-", "starts with '-'"},
		{"127.1", "canonical IPv4"},
		{"127.0.1", "canonical IPv4"},
		{"0x7f.1", "canonical IPv4"},
		{"0x7f000001", "canonical IPv4"},
		{"0X7F000001", "canonical IPv4"},
		{"2130706433", "canonical IPv4"},
		{"0177.0.0.1", "canonical IPv4"},
		{"127.000.0.1", "canonical IPv4"},
		{"1.2.3.4.", "canonical IPv4"},
		{"1.2.3.4.:443", "canonical IPv4"},
		{"1.2.3.4.5", "canonical IPv4"},
		{"256.1.1.1", "canonical IPv4"},
		{"1.2.3.0x4", "canonical IPv4"},
		{"0x7f", "canonical IPv4"},
		{"example.0x", "canonical IPv4"},
		{"example.0xff", "canonical IPv4"},
		{"::1", "brackets"},
		{"::1:443", "brackets"},
		{"[fe80::1%eth0]", "zones"},
		{"[fe80::1%25eth0]:443", "zones"},
		{"[::1]443", "after ']'"},
		{"[::1", "']'"},
		{"[127.0.0.1]", "IPv6"},
		{"user@example.com", "invalid character"},
		{"example.com/path", "invalid character"},
		{"exa mple.com", "whitespace"},
		{"example.com\x00", "control"},
		{"bücher.de", "non-ASCII"},
		{label63 + "a.com", "label longer"},
		{tooLong, "longer than 253"},
		{manyDots, "too long"},
		{strings.Repeat("x", 1<<20), "too long"},
	}
	for _, tt := range invalid {
		h, p, err := Normalize(tt.in, 443)
		if err == nil {
			t.Errorf("Normalize(%.40q) = %q, %d; want error", tt.in, h, p)
			continue
		}
		checkError(t, "Normalize", tt.in, err, tt.reason)
	}
	if _, _, err := Normalize("example.com", 0); err == nil {
		t.Error("Normalize with no port and default 0 succeeded")
	}
	if _, _, err := Normalize("example.com", 65536); err == nil {
		t.Error("Normalize with no port and default 65536 succeeded")
	}
	if _, p, err := Normalize("example.com:8080", 0); err != nil || p != 8080 {
		t.Errorf("explicit port with default 0: %d, %v", p, err)
	}
}

// checkError checks the error contract: a wrapped *Error with the reason,
// a message that names the input but never repeats more than 64 bytes.
func checkError(t *testing.T, fn, in string, err error, reason string) {
	t.Helper()
	var he *Error
	if !errors.As(err, &he) {
		t.Errorf("%s(%.40q) error %v is not a *Error", fn, in, err)
		return
	}
	if !strings.Contains(he.Reason, reason) {
		t.Errorf("%s(%.40q) reason %q does not contain %q", fn, in, he.Reason, reason)
	}
	if want := "invalid host " + Quote(in) + ": " + he.Reason; err.Error() != want {
		t.Errorf("%s(%.40q) error %q, want %q", fn, in, err, want)
	}
	if len(in) > 8 && strings.Contains(he.Reason, in) {
		t.Errorf("%s(%.40q) reason %q repeats the input", fn, in, he.Reason)
	}
	if len(err.Error()) > 400 {
		t.Errorf("%s: error message of %d bytes", fn, len(err.Error()))
	}
}

func TestNormalizeNoAllocs(t *testing.T) {
	for _, in := range []string{"api.github.com", "api.github.com:443", "127.0.0.1:8443", "example.com."} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, _, err := Normalize(in, 443); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Normalize(%q) allocates %v times", in, allocs)
		}
	}
}

func TestCanonical(t *testing.T) {
	valid := []struct {
		in, want string
		isIP     bool
	}{
		{"example.com", "example.com", false},
		{"Example.COM.", "example.com", false},
		{"api_v2.internal-host.example", "api_v2.internal-host.example", false},
		{"a-.b-", "a-.b-", false},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", false},
		{longest, longest, false},
		{longest + ".", longest, false},
		{"192.0.2.1", "192.0.2.1", true},
		{"2001:DB8:0::1", "2001:db8::1", true},
		{"::ffff:192.0.2.7", "192.0.2.7", true},
		{"::1", "::1", true},
	}
	for _, tt := range valid {
		got, isIP, err := Canonical(tt.in)
		if err != nil || got != tt.want || isIP != tt.isIP {
			t.Errorf("Canonical(%.40q) = %q, %v, %v; want %q, %v", tt.in, got, isIP, err, tt.want, tt.isIP)
		}
	}
	invalid := []struct{ in, reason string }{
		{"", "empty host"},
		{".", "empty host"},
		{" ", "whitespace"},
		{"exa mple.com", "whitespace"},
		{"example.com/path", "invalid character"},
		{"example.com:443", "port"},
		{"192.0.2.1:443", "port"},
		{"[::1]", "brackets"},
		{"[::1]:443", "brackets"},
		{"*.example.com", "'*'"},
		{"a..b", "empty label"},
		{"-.example", "starts with '-'"},
		{"a.-b.example", "starts with '-'"},
		{".example.com", "empty label"},
		{"example.com..", "empty label"},
		{"fe80::1%eth0", "zones"},
		{"1.2.3.04", "canonical IPv4"},
		{"1.2.3.4.", "canonical IPv4"},
		{"999", "canonical IPv4"},
		{"host.123", "canonical IPv4"},
		{"host.0x1f", "canonical IPv4"},
		{"héllo.example", "non-ASCII"},
		{"nul\x00.example", "control"},
		{strings.Repeat("a", 64) + ".example", "label longer"},
		{tooLong, "longer than 253"},
		{longest + "..", "longer than 253"},
		{strings.Repeat("x", 1<<20), "longer than 253"},
	}
	for _, tt := range invalid {
		got, isIP, err := Canonical(tt.in)
		if err == nil || got != "" || isIP {
			t.Errorf("Canonical(%.40q) = %q, %v, %v; want error", tt.in, got, isIP, err)
			continue
		}
		checkError(t, "Canonical", tt.in, err, tt.reason)
	}
}

func TestParsePattern(t *testing.T) {
	valid := []struct {
		in       string
		host     string
		wildcard bool
		port     int
	}{
		{"api.github.com", "api.github.com", false, 0},
		{"*.Example.com.", "example.com", true, 0},
		{"*.example.com:8443", "example.com", true, 8443},
		{"*._x.example", "_x.example", true, 0},
		{"*." + base251, base251, true, 0},
		{"[::ffff:10.0.0.1]", "10.0.0.1", false, 0},
		{"[2001:DB8::1]:1", "2001:db8::1", false, 1},
		{"10.0.0.1:80", "10.0.0.1", false, 80},
	}
	for _, tt := range valid {
		host, wildcard, port, err := ParsePattern(tt.in)
		if err != nil || host != tt.host || wildcard != tt.wildcard || port != tt.port {
			t.Errorf("ParsePattern(%.40q) = %q, %v, %d, %v; want %q, %v, %d", tt.in, host, wildcard, port, err, tt.host, tt.wildcard, tt.port)
		}
	}
	invalid := []struct{ in, reason string }{
		{"", "empty host"},
		{"*", "'*'"},
		{"*.", "'*'"},
		{"*.com", "two labels"},
		{"*example.com", "'*'"},
		{"a.*.example.com", "'*'"},
		{"*.*.example.com", "'*'"},
		{"**.example.com", "'*'"},
		{"*.1.2.3.4", "IP address"},
		{"*.1.2.3.4.", "IP address"},
		{"*.-x.example.com", "starts with '-'"},
		{"*.example.0x1", "canonical IPv4"},
		{"*.a" + base251, "at most 251 bytes"},
		{"*." + longest, "at most 251 bytes"},
		{"[*.example.com]", "IPv6"},
		{"-x.example.com:443", "starts with '-'"},
		{"example.com:08443", "port"},
		{"::1", "brackets"},
	}
	for _, tt := range invalid {
		host, wildcard, port, err := ParsePattern(tt.in)
		if err == nil {
			t.Errorf("ParsePattern(%.40q) = %q, %v, %d; want error", tt.in, host, wildcard, port)
			continue
		}
		checkError(t, "ParsePattern", tt.in, err, tt.reason)
	}
}

func TestQuote(t *testing.T) {
	if got := Quote("a\"b"); got != `"a\"b"` {
		t.Errorf("Quote = %s", got)
	}
	long := strings.Repeat("x", 64)
	if got := Quote(long); got != strconv.Quote(long) {
		t.Errorf("Quote cut a 64-byte input: %s", got)
	}
	if got := Quote(long + "yyyy"); got != strconv.Quote(long)+"..." {
		t.Errorf("Quote(65+ bytes) = %s", got)
	}
}

// x509Name reports whether crypto/x509 treats name (lower case, without
// a trailing dot) as a host name. It ignores a trailing dot on the name
// being verified only for such names, so "name." matching a leaf for
// "name" is exactly that test.
func x509Name(name string) bool {
	leaf := &x509.Certificate{DNSNames: []string{name}}
	return leaf.VerifyHostname(name+".") == nil
}

var numberLabel = regexp.MustCompile(`^(0x[0-9a-f]*|[0-9]+)$`)

// wantCanonical is the documented rule set, built independently of the
// package: crypto/x509's host names, DNS lengths, no numeric last label,
// or an IP address netip accepts without a zone.
func wantCanonical(s string) bool {
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Zone() == ""
	}
	name := strings.TrimSuffix(asciiLower(s), ".")
	if len(name) > MaxLen || !x509Name(name) {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if len(l) > maxLabelLen {
			return false
		}
	}
	return !numberLabel.MatchString(labels[len(labels)-1])
}

// asciiLower lower-cases ASCII only, as TLS clients do; Unicode rules
// would turn the Kelvin sign into 'k'.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// certAccepts checks that a leaf naming the canonical host verifies for
// every spelling of it the package accepts, and for a name also that a
// wildcard leaf for "*.host" verifies: the name is valid in a pattern too.
func certAccepts(host string, isIP bool) error {
	if isIP {
		ip := net.ParseIP(host)
		if ip == nil {
			return fmt.Errorf("%q is not an IP for net.ParseIP", host)
		}
		leaf := &x509.Certificate{IPAddresses: []net.IP{ip}}
		if err := leaf.VerifyHostname(host); err != nil {
			return err
		}
		if strings.Contains(host, ":") {
			return leaf.VerifyHostname("[" + host + "]")
		}
		return nil
	}
	leaf := &x509.Certificate{DNSNames: []string{host}}
	for _, h := range []string{host, host + ".", strings.ToUpper(host)} {
		if err := leaf.VerifyHostname(h); err != nil {
			return err
		}
	}
	wild := &x509.Certificate{DNSNames: []string{"*." + host}}
	return wild.VerifyHostname("a." + host)
}

// TestRulesAreX509s compares Canonical with the documented rule set on
// every string of up to four bytes over an alphabet that exercises each
// rule, so the two cannot drift apart unnoticed.
func TestRulesAreX509s(t *testing.T) {
	const alphabet = "a0-_.xZ*:% 9"
	var s []byte
	var walk func(depth int)
	walk = func(depth int) {
		in := string(s)
		got, isIP, err := Canonical(in)
		if want := wantCanonical(in); want != (err == nil) {
			t.Errorf("Canonical(%q) err = %v, want accepted=%v", in, err, want)
		}
		if err == nil {
			if cerr := certAccepts(got, isIP); cerr != nil {
				t.Errorf("Canonical(%q) = %q, but x509 refuses it: %v", in, got, cerr)
			}
		}
		if depth == 4 {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			s = append(s, alphabet[i])
			walk(depth + 1)
			s = s[:len(s)-1]
		}
	}
	walk(0)
}

// TestLeadingHyphenIsWhatX509Refuses pins the reason for the rule that
// the old services parser lacked: Go's verifier does not treat such a
// name as a host name, so a trailing dot or a wildcard leaf fails.
func TestLeadingHyphenIsWhatX509Refuses(t *testing.T) {
	for _, name := range []string{"-x.example.com", "x.-y.example.com", "-"} {
		if x509Name(name) {
			t.Errorf("x509 treats %q as a host name; the rule is stale", name)
		}
		if _, _, err := Canonical(name); err == nil {
			t.Errorf("Canonical(%q) accepted", name)
		}
	}
	for _, name := range []string{"x-.example.com", "x.y-.example.com", "_x.example.com", "x.example._"} {
		if !x509Name(name) {
			t.Errorf("x509 does not treat %q as a host name", name)
		}
		if _, _, err := Canonical(name); err != nil {
			t.Errorf("Canonical(%q): %v", name, err)
		}
	}
}
