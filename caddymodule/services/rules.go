package services

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// Bounds of the rules' fields, so that a definition stays small and a
// request is checked in bounded time.
const (
	maxRuleMethods = 32
	maxRulePaths   = 64
	maxRateCount   = 1_000_000
)

// compiledRules are a service's methods, paths, rate and body cap,
// checked and parsed once.
type compiledRules struct {
	methods []string   // empty: every method
	allow   [][]string // globs split at '*'; empty: every path
	deny    [][]string // also matched against the folded path (foldPath), folded themselves
	rate    Rate
	maxBody int64 // 0: no cap
}

func compileRules(s Service) (compiledRules, error) {
	var r compiledRules
	if len(s.Methods) > maxRuleMethods {
		return r, fmt.Errorf("methods: at most %d", maxRuleMethods)
	}
	for _, m := range s.Methods {
		if !isMethod(m) {
			return r, fmt.Errorf("methods: %q is not an HTTP method in upper case (GET, POST, ...)", m)
		}
		if !slices.Contains(r.methods, m) {
			r.methods = append(r.methods, m)
		}
	}
	if len(s.Paths) > maxRulePaths {
		return r, fmt.Errorf("paths: at most %d", maxRulePaths)
	}
	for _, p := range s.Paths {
		glob, deny := strings.CutPrefix(p, "!")
		if !strings.HasPrefix(glob, "/") {
			return r, fmt.Errorf("paths: %q must start with / (or !/ to deny)", p)
		}
		if err := checkPatternPath(glob); err != nil {
			return r, fmt.Errorf("paths: %q: %w", p, err)
		}
		if deny {
			r.deny = append(r.deny, strings.Split(foldPath(glob), "*"))
		} else {
			r.allow = append(r.allow, strings.Split(glob, "*"))
		}
	}
	if s.RateLimit != "" {
		rate, err := ParseRate(s.RateLimit)
		if err != nil {
			return r, fmt.Errorf("rate_limit: %w", err)
		}
		r.rate = rate
	}
	if s.MaxRequestBody != "" {
		n, err := ParseSize(s.MaxRequestBody)
		if err != nil {
			return r, fmt.Errorf("max_request_body: %w", err)
		}
		r.maxBody = n
	}
	return r, nil
}

// foldPath is a path as a deny glob sees it: percent-escapes of
// unreserved characters decoded (servers route "/%61dmin" as "/admin")
// and ASCII letters in lower case (some route case-insensitively),
// runs of '/' as one (nginx merges them by default, so "//admin"
// reaches "/admin"), so that none gets around a deny entry. Allow
// entries match the path as sent: a request they do not match exactly
// is refused anyway.
func foldPath(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		if c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			if isUnreserved(d) {
				c, i = d, i+2
			}
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// malformedEscape reports a '%' not followed by two hex digits, or a
// raw '\': net/http refuses the first before the proxy sees it, and a
// server may read the second as '/'; a path rule passes neither (and
// foldPath never makes an escape out of "%%36%31").
func malformedEscape(p string) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			return true
		case '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return true
			}
		}
	}
	return false
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// isMethod reports an HTTP method token written in upper case.
func isMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; !('A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// AllowsMethod reports whether the service's methods rule lets method
// through.
func (c *Compiled) AllowsMethod(method string) bool {
	return len(c.rules.methods) == 0 || slices.Contains(c.rules.methods, method)
}

// AllowsPath reports whether the service's paths rule lets the escaped
// path through ("" is "/"): one allow glob matches (when there are
// any) and no deny glob does. An ambiguous path (dot segments, ';',
// encoded '/', '\' or NUL) matches no allow glob and every deny glob.
func (c *Compiled) AllowsPath(path string) bool {
	if len(c.rules.allow) == 0 && len(c.rules.deny) == 0 {
		return true
	}
	if path == "" {
		path = "/"
	}
	if hasDotSegment(path) || hasAmbiguousBytes(path) || malformedEscape(path) {
		return false
	}
	folded := foldPath(path)
	for _, g := range c.rules.deny {
		if globMatch(g, folded) {
			return false
		}
	}
	if len(c.rules.allow) == 0 {
		return true
	}
	for _, g := range c.rules.allow {
		if globMatch(g, path) {
			return true
		}
	}
	return false
}

// SwapsBodies reports whether placeholders in request bodies are
// swapped (body_substitution, default true).
func (c *Compiled) SwapsBodies() bool {
	return c.Service.BodySubstitution == nil || *c.Service.BodySubstitution
}

// RateLimit is the service's rate per session; the zero Rate is none.
func (c *Compiled) RateLimit() Rate { return c.rules.rate }

// MaxRequestBody is the service's request body cap in bytes; 0 is none.
func (c *Compiled) MaxRequestBody() int64 { return c.rules.maxBody }

// Rate is Count requests per Per, in bursts of up to Count.
type Rate struct {
	Count int
	Per   time.Duration
}

// IsZero reports no limit.
func (r Rate) IsZero() bool { return r.Count == 0 }

// ParseRate parses "N/s", "N/m" or "N/h" (N from 1 to 1 000 000).
func ParseRate(s string) (Rate, error) {
	n, unit, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q: want N/s, N/m or N/h, e.g. 60/m", s)
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 || count > maxRateCount {
		return Rate{}, fmt.Errorf("%q: the count must be a whole number from 1 to %d", s, maxRateCount)
	}
	per, ok := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	if !ok {
		return Rate{}, fmt.Errorf("%q: the unit must be s, m or h", s)
	}
	return Rate{Count: count, Per: per}, nil
}

// ParseSize parses a byte size as Caddy's request_body max_size does
// ("10MiB", "500kB", "1048576"), at least one byte.
func ParseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want a size such as 10MiB or 500kB", s)
	}
	switch {
	case n == 0:
		return 0, errors.New(strconv.Quote(s) + ": the size must be at least one byte")
	case n > math.MaxInt64:
		return 0, errors.New(strconv.Quote(s) + ": too large")
	}
	return int64(n), nil
}
