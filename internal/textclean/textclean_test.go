package textclean

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

const limit = 256

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"alice": "alice", "x\x00y": "xy", "a\tb": "a b", "\xff": "\uFFFD", "\u202eevil\u2066": "evil", "\r\n": "",
		"\x1b[31mred": "[31mred", "é 🔑": "é 🔑",
		strings.Repeat("é", 200): strings.Repeat("é", 126) + "...",
		strings.Repeat("a", 300): strings.Repeat("a", 253) + "...",
	} {
		if got := Clean(in, limit); got != want {
			t.Errorf("Clean(%.20q) = %.20q, want %.20q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Clean("GET /v1/items", limit) }); n != 0 {
		t.Errorf("plain text: %v allocations", n)
	}
}

// FuzzClean: Clean always gives short, valid UTF-8 without control
// characters, and keeps short printable text as it is.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"alice", "x\x00y", "a\tb", "\xff", strings.Repeat("é", 200), "\u202eevil", "\r\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := Clean(s, limit)
		if len(c) > limit || !utf8.ValidString(c) {
			t.Fatalf("Clean(%q) = %q", s, c)
		}
		for _, r := range c {
			if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069' {
				t.Fatalf("Clean(%q) = %q keeps %U", s, c, r)
			}
		}
		if Clean(c, limit) != c {
			t.Fatalf("Clean is not idempotent on %q: %q then %q", s, c, Clean(c, limit))
		}
		printable := utf8.ValidString(s) && len(s) <= limit && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
		if printable && c != s {
			t.Fatalf("Clean(%q) = %q changed printable text", s, c)
		}
	})
}
