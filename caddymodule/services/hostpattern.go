package services

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
)

// Limits that keep hostile or mistaken input cheap to reject.
const (
	maxPatternPathLen = 1024 // generous; keeps Specificity bounded
	// maxPatternHostLen is "*." plus the longest host, a trailing dot and
	// a port; package hostname checks the host part exactly.
	maxPatternHostLen = len("*.") + hostname.MaxLen + len(".:65535")
)

// HostPattern says which requests a service applies to: a host (exact,
// wildcard or IP literal), an optional port and an optional path glob.
// The zero value matches nothing. Build one with [ParseHostPattern].
type HostPattern struct {
	host     string   // canonical host, or the base domain of a wildcard
	wildcard bool     // "*.host": one or more labels in front of host
	ipv6     bool     // host is an IPv6 literal (needs brackets in String)
	port     int      // 0: the default port of the scheme in use
	path     string   // "" matches any path
	glob     []string // path split at '*'; nil when path is ""
	spec     int
}

// ParseHostPattern parses a service host pattern:
//
//	api.github.com            exact host, default port of the scheme
//	*.example.com             one or more labels below example.com (not example.com itself)
//	api.example.com:8443      explicit port
//	example.com/api/*         path glob; '*' matches any run of characters, including '/'
//	127.0.0.1:8443, [::1]:8443 IP literals
//
// The host and port follow the rules of package hostname, which are also
// those leafcerts mints certificates by, so any host a pattern names (for
// a wildcard, any valid host below it) can get a leaf. Schemes, user info,
// queries and fragments are rejected.
func ParseHostPattern(s string) (HostPattern, error) {
	p, err := parseHostPattern(strings.TrimSpace(s))
	if err != nil {
		// Quoted with a bound: patterns reach us from the management API.
		return HostPattern{}, fmt.Errorf("invalid host pattern %s: %w", hostname.Quote(s), err)
	}
	return p, nil
}

func parseHostPattern(s string) (HostPattern, error) {
	if s == "" {
		return HostPattern{}, errors.New("empty pattern")
	}
	if len(s) > maxPatternHostLen+maxPatternPathLen {
		return HostPattern{}, errors.New("pattern too long")
	}
	if strings.Contains(s, "://") {
		return HostPattern{}, errors.New(`a scheme is not allowed; write only the host, e.g. "api.example.com"`)
	}
	if err := checkPrintableASCII(s); err != nil {
		return HostPattern{}, err
	}
	if strings.ContainsAny(s, "?#") {
		return HostPattern{}, errors.New("a query or fragment is not allowed")
	}
	hostPort, path := s, ""
	if i := strings.IndexByte(s, '/'); i >= 0 {
		hostPort, path = s[:i], s[i:]
	}
	if strings.Contains(hostPort, "@") {
		return HostPattern{}, errors.New("user info is not allowed")
	}
	var p HostPattern
	var err error
	p.host, p.wildcard, p.port, err = hostname.ParsePattern(hostPort)
	if err != nil {
		// Only the reason: ParseHostPattern names the whole pattern.
		var he *hostname.Error
		if errors.As(err, &he) {
			return HostPattern{}, he
		}
		return HostPattern{}, err
	}
	p.ipv6 = strings.Contains(p.host, ":")
	if path != "" {
		if err := checkPatternPath(path); err != nil {
			return HostPattern{}, err
		}
		p.path = path
		p.glob = strings.Split(path, "*")
	}
	p.spec = p.specificity()
	return p, nil
}

// checkPatternPath validates the path part of a pattern. Patterns are
// compared with the escaped request path, so they must be written the
// same way.
func checkPatternPath(path string) error {
	if len(path) > maxPatternPathLen {
		return fmt.Errorf("path longer than %d characters", maxPatternPathLen)
	}
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c == '\\':
			return errors.New(`'\' is not allowed in the path`)
		case c == '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return errors.New("malformed percent-encoding in the path")
			}
		}
	}
	if hasDotSegment(path) {
		return errors.New(`"." and ".." segments are not allowed in the path`)
	}
	return nil
}

// specificity orders patterns: the host decides first (exact beats any
// wildcard, a wildcard with more labels beats one with fewer), then an
// explicit port, then the literal path prefix length (an exact path beats
// a glob with the same prefix).
func (p HostPattern) specificity() int {
	hostRank := 1000 // above any possible label count (at most 127)
	if p.wildcard {
		hostRank = strings.Count(p.host, ".") + 1
	}
	portRank := 0
	if p.port != 0 {
		portRank = 1
	}
	pathRank := 0
	if p.glob != nil {
		pathRank = 1 + 2*len(p.glob[0])
		if len(p.glob) == 1 {
			pathRank++ // no '*' at all
		}
	}
	// pathRank <= 1+2*maxPatternPathLen+1 < 1<<14
	return hostRank<<15 | portRank<<14 | pathRank
}

// Specificity ranks patterns for choosing among several that match: the
// higher, the more specific. An exact host beats a wildcard, a wildcard
// with more labels beats one with fewer; then an explicit port beats
// none; then a longer literal path prefix beats a shorter one or no path.
func (p HostPattern) Specificity() int { return p.spec }

// String returns the canonical form of the pattern; parsing it again
// yields a pattern that behaves the same.
func (p HostPattern) String() string {
	var b strings.Builder
	if p.wildcard {
		b.WriteString("*.")
	}
	if p.ipv6 {
		b.WriteString("[" + p.host + "]")
	} else {
		b.WriteString(p.host)
	}
	if p.port != 0 {
		b.WriteString(":" + strconv.Itoa(p.port))
	}
	b.WriteString(p.path)
	return b.String()
}

// MatchHost reports whether host and port are covered by the pattern,
// whatever the path. host must be normalized as by [hostname.Normalize]. A
// pattern without a port matches only the default port of the scheme:
// 443 when tls is true, 80 otherwise.
func (p HostPattern) MatchHost(host string, port int, tls bool) bool {
	return p.matchPort(port, tls) && p.matchHost(host)
}

// Match is [HostPattern.MatchHost] plus the path. path is the escaped
// request path as sent on the wire (url.URL.EscapedPath); "" means "/".
// A path containing "." or ".." segments (also percent-encoded, or
// followed by ";params") never matches a pattern that has a path, because
// the upstream may resolve it to a path outside the pattern.
func (p HostPattern) Match(host string, port int, tls bool, path string) bool {
	return p.MatchHost(host, port, tls) && p.matchPath(path)
}

func (p HostPattern) matchPort(port int, tls bool) bool {
	if p.port != 0 {
		return port == p.port
	}
	if tls {
		return port == 443
	}
	return port == 80
}

func (p HostPattern) matchHost(host string) bool {
	if p.host == "" {
		return false // zero value
	}
	if !p.wildcard {
		return host == p.host
	}
	// host must be "<label>[.<label>...].<base>" with a non-empty label
	// right in front of the base.
	n := len(host) - len(p.host)
	return n >= 2 && host[n-1] == '.' && host[n-2] != '.' && host[0] != '.' && host[n:] == p.host
}

func (p HostPattern) matchPath(path string) bool {
	if p.glob == nil {
		return true
	}
	if path == "" {
		path = "/"
	}
	return !hasDotSegment(path) && !hasAmbiguousBytes(path) && globMatch(p.glob, path)
}

// hasAmbiguousBytes reports path parameters (';', which some servers
// strip before routing, so "/admin;.png" reaches "/admin"), encoded
// slashes and NUL bytes: paths a server may route differently from how
// the glob reads them. Such a path never matches a pattern with a path.
func hasAmbiguousBytes(path string) bool {
	if strings.IndexByte(path, ';') >= 0 {
		return true
	}
	for i := strings.IndexByte(path, '%'); i >= 0 && i+2 < len(path); {
		switch strings.ToLower(path[i+1 : i+3]) {
		case "3b", "2f", "00", "5c":
			return true
		}
		j := strings.IndexByte(path[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

// globMatch matches s against a pattern already split at '*'. Taking the
// leftmost occurrence of every middle part is optimal for '*'-only globs,
// so this is linear-ish with no backtracking.
func globMatch(parts []string, s string) bool {
	if len(parts) == 1 {
		return s == parts[0]
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, last)
}

// hasDotSegment reports whether an escaped path has a segment that a
// server could resolve as "." or "..". Segments are split at '/', '\'
// and their percent-encodings, since some servers decode before
// normalizing.
func hasDotSegment(path string) bool {
	start := 0
	for i := 0; i <= len(path); {
		sep := 0
		if i < len(path) {
			sep = separatorLen(path, i)
			if sep == 0 {
				i++
				continue
			}
		}
		if isDotSegment(path[start:i]) {
			return true
		}
		if i == len(path) {
			return false
		}
		i += sep
		start = i
	}
	return false
}

func separatorLen(path string, i int) int {
	switch path[i] {
	case '/', '\\':
		return 1
	case '%':
		if i+2 < len(path) {
			hi, lo := path[i+1], path[i+2]|0x20
			if (hi == '2' && lo == 'f') || (hi == '5' && lo == 'c') {
				return 3
			}
		}
	}
	return 0
}

// isDotSegment reports whether seg is "." or ".." once ";params" are
// dropped and "%2e" is decoded.
func isDotSegment(seg string) bool {
	for i := 0; i < len(seg); i++ {
		if seg[i] == ';' {
			seg = seg[:i]
			break
		}
		if seg[i] == '%' && i+2 < len(seg) && seg[i+1] == '3' && seg[i+2]|0x20 == 'b' {
			seg = seg[:i]
			break
		}
	}
	dots := 0
	for i := 0; i < len(seg); {
		switch {
		case seg[i] == '.':
			i++
		case i+2 < len(seg) && seg[i] == '%' && seg[i+1] == '2' && seg[i+2]|0x20 == 'e':
			i += 3
		default:
			return false
		}
		dots++
	}
	return dots == 1 || dots == 2
}

// checkPrintableASCII covers the path too, which package hostname never
// sees.
func checkPrintableASCII(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return errors.New("whitespace, control and non-ASCII characters are not allowed (write international names in punycode)")
		}
	}
	return nil
}

// isHex is for percent-encoding in paths.
func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
