// Package hostname is the one parser for every host agent-vault handles:
// service host patterns, Host headers and CONNECT targets, and the names
// put into minted leaf certificates. Sharing it is what guarantees that a
// host the management API accepts is one a leaf can be minted for and a
// TLS client will accept, so a bad host fails when it is defined rather
// than at the handshake.
//
// The rules:
//
//   - A host is a DNS name or an IP literal. Case does not matter and one
//     trailing dot on a name is ignored; the canonical form is lower case
//     without the dot.
//   - A name is at most 253 bytes of labels separated by '.'. A label is
//     1-63 bytes of a-z, 0-9, '-' and '_' and does not start with '-' (it
//     may end with one). These are exactly the names crypto/x509 treats as
//     host names when verifying a leaf; for any other name it falls back to
//     an exact string comparison, so neither a trailing dot nor a wildcard
//     would match it. The length limits are DNS's, on top of that.
//   - A name whose last label is a number, decimal or hex after "0x" (an
//     empty "0x" included), is rejected: URL parsers and inet_aton read it
//     as an IPv4 address, so it is a non-canonical IPv4 address ("127.1",
//     "0x7f000001", "1.2.3.4.", "a.0x1f").
//   - IPv4 is accepted only as four decimal numbers 0-255 without leading
//     zeros, and without a trailing dot.
//   - IPv6 must be in brackets wherever a port may follow ("[::1]:8443",
//     "[::1]"); only [Canonical], which never takes a port, wants it bare.
//     Zones are rejected. IPv4-mapped addresses are unmapped, so
//     "[::ffff:1.2.3.4]" is 1.2.3.4. The canonical form is that of
//     netip.Addr.String, without brackets.
//   - A port is decimal 1-65535 with no sign and no leading zero.
//   - Whitespace, control characters and non-ASCII bytes are rejected;
//     international names must be written in punycode.
//   - Only [ParsePattern] takes a wildcard "*.<name>": "*" is the whole
//     left-most label, and <name> is not an IP address, has at least two
//     labels and is at most 251 bytes, so that "a.<name>" is still a valid
//     host that can get a certificate.
//
// Every error wraps an [*Error] holding the reason alone; the messages
// quote at most 64 bytes of the input.
package hostname

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

const (
	// MaxLen is the length of the longest canonical host.
	MaxLen = 253

	maxLabelLen = 63
	// maxWildcardBase leaves room for the shortest label, "a.", in front.
	maxWildcardBase = MaxLen - len("a.")
	// maxHostPortLen bounds host:port input before any real parsing, so
	// hostile input is cheap to reject.
	maxHostPortLen = len("*.") + MaxLen + len(".:65535")
	// maxQuoted bounds how much input an error message repeats.
	maxQuoted = 64
)

// Error is the reason a host was rejected. Its message never contains the
// input beyond a single offending byte; the functions of this package wrap
// it with a bounded quote of the input.
type Error struct {
	Reason string
}

func (e *Error) Error() string { return e.Reason }

func fail(input, reason string) error {
	return fmt.Errorf("invalid host %s: %w", Quote(input), &Error{Reason: reason})
}

// Quote quotes s for an error message, cutting it to its first 64 bytes.
func Quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "..."
	}
	return strconv.Quote(s)
}

// Normalize splits a request's "host[:port]" (a Host header or a CONNECT
// target) into a canonical host and a port, using defaultPort when there
// is none. IPv6 comes back without brackets. It does not allocate for a
// valid lower-case name or IPv4 address.
func Normalize(hostport string, defaultPort int) (host string, port int, err error) {
	host, port, reason := normalize(hostport, defaultPort)
	if reason != "" {
		return "", 0, fail(hostport, reason)
	}
	return host, port, nil
}

func normalize(hostport string, defaultPort int) (string, int, string) {
	rawHost, bracketed, portStr, hasPort, reason := split(hostport)
	if reason != "" {
		return "", 0, reason
	}
	port := defaultPort
	if hasPort {
		if port, reason = parsePort(portStr); reason != "" {
			return "", 0, reason
		}
	} else if port < 1 || port > 65535 {
		return "", 0, fmt.Sprintf("no port and invalid default port %d", defaultPort)
	}
	host, _, _, reason := canonical(rawHost, bracketed, false)
	if reason != "" {
		return "", 0, reason
	}
	return host, port, ""
}

// ParsePattern parses the "host[:port]" of a service pattern, where host
// may also be a wildcard "*.<name>". For a wildcard it returns the
// canonical <name> and wildcard true. port is 0 when there is none.
func ParsePattern(hostport string) (host string, wildcard bool, port int, err error) {
	rawHost, bracketed, portStr, hasPort, reason := split(hostport)
	if reason == "" && hasPort {
		port, reason = parsePort(portStr)
	}
	if reason == "" {
		host, wildcard, _, reason = canonical(rawHost, bracketed, true)
	}
	if reason != "" {
		return "", false, 0, fail(hostport, reason)
	}
	return host, wildcard, port, nil
}

// Canonical validates a bare host, with neither port nor brackets, as put
// in a certificate, and returns its canonical form. Unlike everywhere a
// port may follow, IPv6 is written without brackets here.
func Canonical(host string) (canonicalHost string, isIP bool, err error) {
	canonicalHost, isIP, reason := bare(host)
	if reason != "" {
		return "", false, fail(host, reason)
	}
	return canonicalHost, isIP, nil
}

func bare(h string) (string, bool, string) {
	if h == "" {
		return "", false, "empty host"
	}
	if len(h) > MaxLen+len(".") {
		return "", false, "longer than 253 bytes"
	}
	if reason := checkBytes(h); reason != "" {
		return "", false, reason
	}
	if h[0] == '[' {
		return "", false, "brackets are not allowed here; write an IPv6 address bare"
	}
	if strings.IndexByte(h, ':') >= 0 {
		host, reason := canonicalIPv6(h, "invalid IPv6 address (and a port is not allowed here)")
		return host, reason == "", reason
	}
	host, _, isIP, reason := canonical(h, false, false)
	return host, isIP, reason
}

func checkBytes(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return "whitespace, control and non-ASCII characters are not allowed (write international names in punycode)"
		}
	}
	return ""
}

// split separates "host", "host:port", "[v6]" and "[v6]:port" after the
// checks every host:port gets.
func split(s string) (host string, bracketed bool, port string, hasPort bool, reason string) {
	if s == "" {
		return "", false, "", false, "empty host"
	}
	if len(s) > maxHostPortLen {
		return "", false, "", false, "host too long"
	}
	if reason := checkBytes(s); reason != "" {
		return "", false, "", false, reason
	}
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", false, "", false, "missing ']' after IPv6 address"
		}
		host, rest := s[1:end], s[end+1:]
		switch {
		case rest == "":
			return host, true, "", false, ""
		case rest[0] == ':':
			return host, true, rest[1:], true, ""
		default:
			return "", false, "", false, "unexpected characters after ']'"
		}
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, false, "", false, ""
	case 1:
		host, port, _ := strings.Cut(s, ":")
		return host, false, port, true, ""
	default:
		return "", false, "", false, "IPv6 addresses must be enclosed in brackets, e.g. [::1]:8443"
	}
}

// parsePort accepts only canonical decimal ports so that every port has
// exactly one spelling.
func parsePort(s string) (int, string) {
	const invalid = "invalid port: must be 1-65535, in decimal without sign or leading zero"
	if s == "" {
		return 0, "empty port"
	}
	if len(s) > 5 || s[0] == '0' {
		return 0, invalid
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, invalid
		}
		n = n*10 + int(s[i]-'0')
	}
	if n > 65535 {
		return 0, invalid
	}
	return n, ""
}

// canonical validates a host taken out of host:port. With allowWildcard,
// a left-most "*" label is accepted and stripped, and wildcard reports it.
func canonical(h string, bracketed, allowWildcard bool) (host string, wildcard, isIP bool, reason string) {
	if bracketed {
		host, reason := canonicalIPv6(h, "invalid IPv6 address in brackets")
		return host, false, reason == "", reason
	}
	h = strings.ToLower(h)
	// Before the trailing dot goes: "1.2.3.4." is not an address (netip
	// and Go's TLS client disagree with URL parsers on it), so it falls
	// through to the name rules, which reject its numeric last label.
	if isIPv4(h) {
		return h, false, true, ""
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "", false, false, "empty host"
	}
	if allowWildcard && strings.HasPrefix(h, "*.") {
		base := h[2:]
		if isIPv4(base) {
			return "", false, false, "a wildcard cannot be applied to an IP address"
		}
		if reason := checkName(base); reason != "" {
			return "", false, false, reason
		}
		if strings.IndexByte(base, '.') < 0 {
			return "", false, false, "a wildcard needs a domain of at least two labels, e.g. *.example.com"
		}
		if len(base) > maxWildcardBase {
			return "", false, false, "a wildcard's domain must be at most 251 bytes, so that a host below it fits in 253"
		}
		return base, true, false, ""
	}
	if reason := checkName(h); reason != "" {
		return "", false, false, reason
	}
	return h, false, false, ""
}

// canonicalIPv6 returns invalid as the reason for anything but an IPv6
// address without a zone.
func canonicalIPv6(h, invalid string) (string, string) {
	if strings.IndexByte(h, '%') >= 0 {
		return "", "IPv6 zones are not allowed"
	}
	addr, err := netip.ParseAddr(h)
	if err != nil || !addr.Is6() {
		return "", invalid
	}
	return addr.Unmap().String(), ""
}

// isIPv4 reports whether h is an IPv4 address in canonical dotted decimal,
// the only form netip accepts.
func isIPv4(h string) bool {
	for i := 0; i < len(h); i++ {
		if (h[i] < '0' || h[i] > '9') && h[i] != '.' {
			return false // checked first: a failed ParseAddr allocates
		}
	}
	_, err := netip.ParseAddr(h)
	return h != "" && err == nil
}

// checkName validates a lower-case DNS name without a trailing dot.
func checkName(h string) string {
	if len(h) > MaxLen {
		return "longer than 253 bytes"
	}
	lastStart := 0
	for start := 0; start <= len(h); {
		end := strings.IndexByte(h[start:], '.')
		if end < 0 {
			end = len(h)
		} else {
			end += start
		}
		label := h[start:end]
		if label == "" {
			return "empty label in host"
		}
		if len(label) > maxLabelLen {
			return "label longer than 63 bytes"
		}
		if label[0] == '-' {
			return "a label starts with '-', which TLS clients do not accept in a certificate"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if c == '*' {
				return "'*' is only allowed as the whole left-most label of a pattern"
			}
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("invalid character %q in host", c)
			}
		}
		lastStart = start
		start = end + 1
	}
	if isNumber(h[lastStart:]) {
		return "not a canonical IPv4 address (use four decimal numbers without leading zeros, e.g. 127.0.0.1)"
	}
	return ""
}

// isNumber reports whether a label is what URL parsers read as an IPv4
// number: decimal, or hex after "0x" (possibly with no digits at all).
func isNumber(l string) bool {
	if strings.HasPrefix(l, "0x") {
		for i := 2; i < len(l); i++ {
			if !isHex(l[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return l != ""
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
}
