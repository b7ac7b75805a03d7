// Package textclean makes untrusted text safe to store and show: the
// one cleaning of the audit trail's and the activity log's fields.
package textclean

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean makes s valid UTF-8 (U+FFFD for what is not) of at most limit
// bytes, cut at a character boundary and marked with "...". It drops
// control characters (C0, DEL, C1: a NUL is refused by PostgreSQL, an
// escape sequence rewrites a terminal showing the text), line and
// paragraph separators, and the bidirectional controls that make text
// read other than it is stored; a tab becomes a space. Short printable
// ASCII comes back as it is, without allocating. limit is at least 4.
func Clean(s string, limit int) string {
	if plain(s, limit) {
		return s
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

// plain: short printable ASCII, which Clean leaves as it is.
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
