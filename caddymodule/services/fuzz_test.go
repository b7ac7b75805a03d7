package services

import (
	"errors"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
)

func FuzzParseHostPattern(f *testing.F) {
	for _, s := range []string{
		"api.github.com", "*.example.com", "api.example.com:8443", "example.com/api/*",
		"127.0.0.1:8443", "[::1]:8443", "[::ffff:1.2.3.4]", "EXAMPLE.com./a*b*c", "*.a.b:1/x%2F*",
		"https://x.io", "a..b", "127.1", "x.io/../a", "[fe80::1%eth0]",
	} {
		f.Add(s)
	}
	ca := newThrowawayCA(f)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseHostPattern(s)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid host pattern") {
				t.Fatalf("error %q does not name the input", err)
			}
			return
		}
		again, err := ParseHostPattern(p.String())
		if err != nil {
			t.Fatalf("String() %q of %q does not re-parse: %v", p.String(), s, err)
		}
		if !reflect.DeepEqual(p, again) {
			t.Fatalf("re-parsed %q differs: %#v vs %#v", p.String(), p, again)
		}
		// Defining the service is the last chance to refuse a host that
		// would fail at the TLS handshake.
		if err := ca.checkLeaf(certHost(p)); err != nil {
			t.Fatalf("pattern %q accepted, but no usable leaf: %v", s, err)
		}
		// A request to the pattern's own host (normalized the way the
		// proxy will) must match it on the pattern's port.
		if p.wildcard {
			return
		}
		hostPort := p.host
		if p.ipv6 {
			hostPort = "[" + hostPort + "]"
		}
		host, port, err := hostname.Normalize(hostPort, 443)
		if err != nil || host != p.host {
			t.Fatalf("Normalize(%q) = %q, %v; pattern host %q", hostPort, host, err, p.host)
		}
		if p.port != 0 {
			port = p.port
		}
		if !p.MatchHost(host, port, true) {
			t.Fatalf("%q does not match its own host %q:%d", p.String(), host, port)
		}
	})
}

// inetAtonLike reports whether s would be read as an IPv4 address by
// inet_aton or a WHATWG URL parser: 1-4 dot-separated numbers in decimal,
// octal or hex.
func inetAtonLike(s string) bool {
	parts := strings.Split(strings.TrimSuffix(s, "."), ".")
	if len(parts) > 4 {
		return false
	}
	for _, p := range parts {
		if !numberRE.MatchString(p) {
			return false
		}
	}
	return true
}

// numberRE is what inet_aton accepts as one part: decimal, octal
// (leading 0) or hex (0x, possibly with no digits).
var numberRE = regexp.MustCompile(`^(0[xX][0-9a-fA-F]*|[0-9]+)$`)

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"api.github.com", "API.github.com.:443", "127.0.0.1:8443", "[::1]:8443", "[::ffff:7f00:1]",
		"127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[fe80::1%25eth0]", "a..b", "x:0",
	} {
		f.Add(s, 443)
	}
	f.Fuzz(func(t *testing.T, s string, def int) {
		host, port, err := hostname.Normalize(s, def)
		if err != nil {
			if host != "" || port != 0 {
				t.Fatalf("error with results %q %d", host, port)
			}
			return
		}
		if port < 1 || port > 65535 || host == "" {
			t.Fatalf("Normalize(%q) = %q, %d", s, host, port)
		}
		if host != strings.ToLower(host) || strings.HasSuffix(host, ".") {
			t.Fatalf("host %q not normalized", host)
		}
		addr, ipErr := netip.ParseAddr(host)
		if ipErr == nil {
			if addr.String() != host || addr.Is4In6() || addr.Zone() != "" {
				t.Fatalf("IP %q not canonical", host)
			}
		} else if inetAtonLike(host) {
			t.Fatalf("%q accepted as a name but resolvers may read it as an IPv4 address", host)
		}
		// Idempotent.
		hostPort := host
		if strings.Contains(host, ":") {
			hostPort = "[" + host + "]"
		}
		hostPort += ":" + strconv.Itoa(port)
		h2, p2, err := hostname.Normalize(hostPort, 1)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("Normalize(%q) = %q, %d, %v; want %q, %d", hostPort, h2, p2, err, host, port)
		}
		// An exact pattern for it matches it.
		p, err := ParseHostPattern(hostPort)
		if err != nil {
			t.Fatalf("ParseHostPattern(%q): %v", hostPort, err)
		}
		if !p.Match(host, port, false, "/") {
			t.Fatalf("%q does not match %q:%d", hostPort, host, port)
		}
	})
}

var placeholderRE = regexp.MustCompile(`agvph_[0-9a-f]{32}`)

func FuzzReplaceIn(f *testing.F) {
	for _, s := range []string{
		"", "plain", ph1, "Bearer " + ph1, ph1 + ph2, "agvph_" + ph1, "agvph_0123", ph1 + "0",
		"x=" + ph1 + "&y=" + ph2[:20], strings.ToUpper(ph1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Secrets that can never form or extend a placeholder.
		resolve := func(ph string) (string, error) {
			if !isPlaceholder(ph) {
				t.Fatalf("resolve(%q): not a placeholder", ph)
			}
			return "<SECRET:" + strings.ToUpper(ph[6:10]) + ">", nil
		}
		out, changed, err := replaceIn(s, resolve)
		if err != nil {
			t.Fatal(err)
		}
		want := placeholderRE.ReplaceAllStringFunc(s, func(ph string) string { v, _ := resolve(ph); return v })
		if out != want || changed != (out != s) {
			t.Fatalf("replaceIn(%q) = %q, %v; want %q", s, out, changed, want)
		}
		if placeholderRE.MatchString(out) {
			t.Fatalf("output %q still holds a placeholder", out)
		}

		boom := errors.New("boom")
		out, changed, err = replaceIn(s, func(string) (string, error) { return "", boom })
		if placeholderRE.MatchString(s) {
			if !errors.Is(err, boom) {
				t.Fatalf("error not propagated: %v", err)
			}
		} else if err != nil || out != s || changed {
			t.Fatalf("no placeholder but %q, %v, %v", out, changed, err)
		}
	})
}
