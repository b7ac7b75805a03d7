package scrub

import (
	"cmp"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// edgeCases are secrets whose first or last bytes the greedy parse
// swallows into the escape next to them, with a byte escaped inside
// them so the raw view lacks them too. Each input is valid one-level
// escaping that some decoder (json.loads, html.unescape, urllib's
// unquote, a JS string) turns into text holding the secret.
var edgeCases = []struct{ name, secret, in, want string }{
	// The escape before swallows the secret's first bytes.
	{"json %2A", "AKIAIOSFODNN7EXAMPLEkey0123", `{"k":"%2AKI\u0041IOSFODNN7EXAMPLEkey0123"}`, `{"k":"` + ph + `"}`},
	{"html %2A", "AKIAIOSFODNN7EXAMPLEkey", `x=%2AKI&#65;IOSFODNN7EXAMPLEkey&y`, `x=` + ph + `&y`},
	{"url \\u004A", "AKIAIOSFODNN7EXAMPLEkey0123", `a \u004AKI%41IOSFODNN7EXAMPLEkey0123 b`, `a ` + ph + ` b`},
	{"\\n", "nopeSECRETvalue123", `"\nop%65SECRETvalue123"`, `"` + ph + `"`},
	{"\\u0041 two bytes", "41SECRETvalue-xyz", `\u0041SECRETv&#97;lue-xyz`, ph},
	{"&amp;", "p;SECRETvalue-xyz", `&amp;SECRETv%61lue-xyz.`, ph + `.`},
	// The mirror: the escape after swallows the secret's last bytes.
	{"%4 at the end", "abcdefSECRET%4", `<\x61bcdefSECRET%41>`, `<` + ph + `>`},
	{"&am at the end", "keyEXAMPLEx&am", `k%65yEXAMPLEx&amp;`, ph},
	{"\\u00 at the end", "SECRETvalue\\u00", `SECRET%76alue\u0041!`, ph + `!`},
	{"\\ at the end", "valueSECRET123\\", `v%61lueSECRET123\n`, ph},
	// Both ends.
	{"both", "AKIAIOSFODNN7EX%4", `%2AKI\x41IOSFODNN7EX%41`, ph},
	{"both, adjacent escapes", "AKIA%4", `%2AKIA%41`, ph},
}

func TestEdgeOfEscape(t *testing.T) {
	for _, tc := range edgeCases {
		var set SecretSet
		set.Add(tc.secret, ph)
		r := (&Cache{}).Redactor(&set)
		if got := r.String(tc.in); got != tc.want {
			t.Errorf("%s: String(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
			continue
		}
		if !r.contains(tc.in) {
			t.Errorf("%s: contains(%q) = false", tc.name, tc.in)
		}
		checkEveryCut(t, r, tc.in, tc.want)
	}
}

// checkEveryCut asserts that the Reader turns in into want however it
// is cut in two reads, and a byte at a time.
func checkEveryCut(t *testing.T, r *Redactor, in, want string) {
	t.Helper()
	for k := 0; k <= len(in); k++ {
		for _, src := range []io.Reader{
			io.MultiReader(strings.NewReader(in[:k]), strings.NewReader(in[k:])),
			io.MultiReader(iotest.OneByteReader(strings.NewReader(in[:k])), iotest.DataErrReader(strings.NewReader(in[k:]))),
		} {
			if got, err := io.ReadAll(r.Reader(src)); err != nil || string(got) != want {
				t.Fatalf("Reader(%q cut at %d) = %q, %v; want %q", in, k, got, err, want)
			}
		}
	}
}

// The escapes decoders accept beyond JSON's, URL's and HTML's usual
// ones: each form of a secret is replaced.
func TestMoreEscapes(t *testing.T) {
	const secret = `sk_live{0123}|x\y'z`
	var set SecretSet
	set.Add(secret, ph)
	r := (&Cache{}).Redactor(&set)
	every := func(f func(c byte) string) string {
		var b strings.Builder
		for i := range len(secret) {
			b.WriteString(f(secret[i]))
		}
		return b.String()
	}
	named := map[byte]string{'_': "&UnderBar;", '{': "&lcub;", '}': "&rcub;", '|': "&VerticalLine;", '\\': "&bsol;", '\'': "&apos;"}
	for name, form := range map[string]string{
		"python repr":    strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(secret),
		"numeric, no ;":  every(func(c byte) string { return "&#" + strconv.Itoa(int(c)) }),
		"numeric, zeros": every(func(c byte) string { return "&#x" + strings.Repeat("0", 20) + strconv.FormatInt(int64(c), 16) + ";" }),
		"escape()": every(func(c byte) string {
			return "%u00" + strconv.FormatInt(int64(c)>>4, 16) + strconv.FormatInt(int64(c)&15, 16)
		}),
		"python \\U": every(func(c byte) string {
			return `\U000000` + strconv.FormatInt(int64(c)>>4, 16) + strconv.FormatInt(int64(c)&15, 16)
		}),
		"ES6 \\u{}":   every(func(c byte) string { return `\u{` + strconv.FormatInt(int64(c), 16) + "}" }),
		"HTML5 named": every(func(c byte) string { return cmp.Or(named[c], string(c)) }),
	} {
		in := "<" + form + ">"
		if got := r.String(in); got != "<"+ph+">" {
			t.Errorf("%s: String(%q) = %q", name, in, got)
		}
	}
}
