package activity

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of the text fields (bytes), so that a hostile request cannot
// fill the table: a path or reason is cut, marked with "...".
const (
	maxField  = 256
	maxPath   = 1024
	maxReason = 512
	maxCreds  = 32
)

// prepare fills in what the proxy left to the writer and cleans the
// text (done off the hot path, in the writer goroutine).
func (r *Recorder) prepare(e *Entry) {
	if e.At.IsZero() {
		e.At = r.o.Now()
	}
	e.At = e.At.UTC()
	if e.ID == "" {
		e.ID = NewID(e.At)
	}
	if e.Instance == "" {
		e.Instance = r.o.Instance
	}
	e.Instance, e.Session, e.Agent = clean(e.Instance, maxField), clean(e.Session, maxField), clean(e.Agent, maxField)
	e.Service, e.Method, e.Host = clean(e.Service, maxField), clean(e.Method, maxField), clean(e.Host, maxField)
	e.Path, e.Code, e.Reason = clean(e.Path, maxPath), clean(e.Code, maxField), clean(e.Reason, maxReason)
	e.Client = clean(e.Client, maxField)
	e.Decision = Decision(clean(string(e.Decision), maxField))
	if len(e.Credentials) > maxCreds {
		e.Credentials = e.Credentials[:maxCreds]
	}
	for i, c := range e.Credentials {
		if s := clean(c, maxField); s != c {
			e.Credentials = append([]string(nil), e.Credentials...) // never write into the caller's slice
			e.Credentials[i] = s
		}
	}
}

// clean makes s valid UTF-8 of at most limit bytes without control
// characters (a NUL is refused by PostgreSQL, an escape sequence
// rewrites a terminal showing the log) or the bidirectional controls
// that make text read other than it is stored; a tab becomes a space.
func clean(s string, limit int) string {
	if plain(s, limit) {
		return s // the common case allocates nothing
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(c rune) rune {
		switch {
		case c == '\t':
			return ' '
		case unicode.IsControl(c), c == '\u2028', c == '\u2029',
			c >= '\u202a' && c <= '\u202e', c >= '\u2066' && c <= '\u2069', c == '\u200e', c == '\u200f', c == '\u061c':
			return -1
		}
		return c
	}, s)
	if len(s) <= limit {
		return s
	}
	cut := limit - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// plain: short printable ASCII, which clean leaves as it is.
func plain(s string, limit int) bool {
	if len(s) > limit {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
