package hostname

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// bracket writes a canonical host the way it goes in front of a port.
func bracket(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// checkFuzzError is the error contract for arbitrary input: typed, and
// bounded however long the input.
func checkFuzzError(t *testing.T, fn, in string, err error) {
	t.Helper()
	var he *Error
	if !errors.As(err, &he) || he.Reason == "" {
		t.Fatalf("%s(%q) error %v is not a *Error with a reason", fn, in, err)
	}
	if len(err.Error()) > 400 {
		t.Fatalf("%s: %d-byte error message for %d bytes of input", fn, len(err.Error()), len(in))
	}
}

// checkCanonicalHost checks what every accepted host must satisfy: it is
// a fixed point of Canonical and Normalize, and a TLS client accepts a
// leaf naming it.
func checkCanonicalHost(t *testing.T, in, host string, isIP bool) {
	t.Helper()
	if host == "" || len(host) > MaxLen || host != asciiLower(host) || strings.HasSuffix(host, ".") {
		t.Fatalf("%q gave non-canonical host %q", in, host)
	}
	addr, err := netip.ParseAddr(host)
	if isIP != (err == nil) || isIP && (addr.String() != host || addr.Is4In6() || addr.Zone() != "") {
		t.Fatalf("%q gave host %q, isIP %v: not a canonical IP", in, host, isIP)
	}
	if c, ip, err := Canonical(host); err != nil || c != host || ip != isIP {
		t.Fatalf("Canonical(%q) = %q, %v, %v; not a fixed point", host, c, ip, err)
	}
	if h, p, err := Normalize(bracket(host)+":8443", 1); err != nil || h != host || p != 8443 {
		t.Fatalf("Normalize(%q) = %q, %d, %v; not a fixed point", bracket(host)+":8443", h, p, err)
	}
	if err := certAccepts(host, isIP); err != nil {
		t.Fatalf("%q gave %q, which x509 refuses: %v", in, host, err)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"api.github.com", "API.github.com.:443", "127.0.0.1:8443", "[::1]:8443", "[::ffff:7f00:1]",
		"127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[fe80::1%25eth0]", "a..b", "x:0",
		"-x.example.com", "x-.example.com:1", "1.2.3.4.", "[1.2.3.4]",
	} {
		f.Add(s, 443)
	}
	f.Fuzz(func(t *testing.T, s string, def int) {
		host, port, err := Normalize(s, def)
		if err != nil {
			if host != "" || port != 0 {
				t.Fatalf("error with results %q %d", host, port)
			}
			checkFuzzError(t, "Normalize", s, err)
			return
		}
		if port < 1 || port > 65535 {
			t.Fatalf("Normalize(%q) port %d", s, port)
		}
		_, isIP, _ := Canonical(host)
		checkCanonicalHost(t, s, host, isIP)
		if h, p, err := Normalize(bracket(host)+":"+strconv.Itoa(port), 1); err != nil || h != host || p != port {
			t.Fatalf("Normalize of its own output %q:%d = %q, %d, %v", host, port, h, p, err)
		}
		// A pattern is the same host:port syntax plus wildcards.
		h, wildcard, p, err := ParsePattern(s)
		if err != nil || wildcard || h != host || (p != port && !(p == 0 && port == def)) {
			t.Fatalf("ParsePattern(%q) = %q, %v, %d, %v; Normalize gave %q, %d", s, h, wildcard, p, err, host, port)
		}
	})
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{
		"example.com", "Example.COM.", "192.0.2.1", "::ffff:192.0.2.1", "fe80::1%eth0", "[::1]",
		"a b", "example.com:443", "*.example.com", "1.2.3.04", "-.", "a-.b", "_x.y", "host.0x1f",
		"\u212a.example", "1.2.3.4.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, isIP, err := Canonical(s)
		// The rules as documented, computed without this package.
		if want := wantCanonical(s); want != (err == nil) {
			t.Fatalf("Canonical(%q) err = %v; the documented rules say accepted=%v", s, err, want)
		}
		if err != nil {
			if host != "" || isIP {
				t.Fatalf("error with results %q %v", host, isIP)
			}
			checkFuzzError(t, "Canonical", s, err)
		} else {
			checkCanonicalHost(t, s, host, isIP)
		}
		// Without brackets or a port to parse, Normalize agrees.
		if strings.ContainsAny(s, "[:") {
			return
		}
		h, _, nerr := Normalize(s, 443)
		if (nerr == nil) != (err == nil) || h != host {
			t.Fatalf("Normalize(%q) = %q, %v; Canonical gave %q, %v", s, h, nerr, host, err)
		}
	})
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{
		"api.github.com", "*.example.com", "*.Example.com.:8443", "[::ffff:1.2.3.4]", "*.1.2.3.4",
		"*.com", "**.a.b", "*.-a.b", "127.0.0.1:80", "*." + strings.Repeat("a.", 126) + "b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, wildcard, port, err := ParsePattern(s)
		if err != nil {
			if host != "" || wildcard || port != 0 {
				t.Fatalf("error with results %q %v %d", host, wildcard, port)
			}
			checkFuzzError(t, "ParsePattern", s, err)
			return
		}
		if port < 0 || port > 65535 {
			t.Fatalf("ParsePattern(%q) port %d", s, port)
		}
		again := bracket(host)
		_, isIP, _ := Canonical(host)
		if wildcard {
			if isIP || !strings.Contains(host, ".") {
				t.Fatalf("ParsePattern(%q): wildcard over %q", s, host)
			}
			// Some host below the wildcard must be able to get a leaf.
			below := "a." + host
			c, ip, err := Canonical(below)
			if err != nil || c != below || ip {
				t.Fatalf("ParsePattern(%q) = *.%q, but Canonical(%q) = %q, %v, %v", s, host, below, c, ip, err)
			}
			checkCanonicalHost(t, s, below, false)
			again = "*." + host
		}
		checkCanonicalHost(t, s, host, isIP)
		if port != 0 {
			again += ":" + strconv.Itoa(port)
		}
		h, w, p, err := ParsePattern(again)
		if err != nil || h != host || w != wildcard || p != port {
			t.Fatalf("ParsePattern(%q) = %q, %v, %d, %v; not a fixed point of %q", again, h, w, p, err, s)
		}
	})
}
