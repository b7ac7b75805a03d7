package scrub

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"net/textproto"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The forms of a secret the Redactor searches for. URL, JSON and HTML
// escapings need no form of their own: the decoding view undoes them
// (in any mix, upper or lower hex). What remains are the encodings that
// change every byte: base64 (std and URL alphabets, padded or not, and
// inside a larger blob), hex, and UTF-16; and, for a secret that holds
// escape-like text itself, what the decoding view shows of it JSON- or
// HTML-escaped.

// minEncodedLen is the shortest secret that gets encoded forms, and the
// shortest encoded form kept: a short secret's encodings (the base64 of
// three bytes is four letters) turn up by chance in ordinary text and
// would be redacted there. The raw value is matched at any length.
const minEncodedLen = 8

// forms derives every pattern with its stand-in, applying the
// precedence rules of Add and AddWritten in the order things were
// added.
func (s *SecretSet) forms() map[string]string {
	forms := make(map[string]string)
	keep := func(form, standIn string) {
		if _, known := forms[form]; !known {
			forms[form] = standIn
		}
	}
	for _, a := range s.added {
		forms[a.secret] = a.standIn
		for _, f := range encodedForms(a.secret) {
			keep(f, a.standIn)
		}
		if trimmed := textproto.TrimString(a.secret); trimmed != a.secret && trimmed != "" {
			keep(trimmed, a.standIn)
			for _, f := range encodedForms(trimmed) {
				keep(f, a.standIn)
			}
		}
	}
	for _, w := range s.written {
		keep(w, Redacted)
	}
	return forms
}

// encodedForms returns the encoded forms of v (possibly repeated), or
// none if v is shorter than minEncodedLen.
func encodedForms(v string) []string {
	if len(v) < minEncodedLen {
		return nil
	}
	var forms []string
	add := func(f string) {
		if len(f) >= minEncodedLen {
			forms = append(forms, f)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		add(enc.EncodeToString([]byte(v)))
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for prefix := range 3 {
			add(base64Core(enc, v, prefix))
		}
	}
	add(hex.EncodeToString([]byte(v))) // lower case; matching folds case
	for _, f := range viewForms(v) {
		add(f)
	}
	if utf8.ValidString(v) {
		units := utf16.Encode([]rune(v))
		le := make([]byte, 0, 2*len(units))
		be := make([]byte, 0, 2*len(units))
		for _, u := range units {
			le = binary.LittleEndian.AppendUint16(le, u)
			be = binary.BigEndian.AppendUint16(be, u)
		}
		add(string(le))
		add(string(be))
	}
	return forms
}

// base64Core returns the characters of the base64 of prefix bytes
// followed by v that depend on v's bits alone. Whatever precedes v in a
// larger blob, its length modulo 3 is one of the three prefix lengths,
// so one of the three cores occurs in the blob's encoding.
func base64Core(enc *base64.Encoding, v string, prefix int) string {
	src := make([]byte, prefix, prefix+len(v))
	e := enc.EncodeToString(append(src, v...))
	// Character k encodes bits [6k, 6k+6); v has bits [8p, 8p+8n).
	first := (8*prefix + 5) / 6
	last := (8*prefix + 8*len(v)) / 6
	return e[first:last]
}

// Outer escapings that leave a secret's own escape-like text alone: a
// JSON string escapes only the backslash of "\u0041" and not "%41" or
// "&amp;"; HTML escapes the "&" of "&amp;" only. Any JSON or HTML
// escaper's other escapes decode back to the character, so these
// minimal ones give the same view.
var (
	jsonOuter = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	htmlOuter = strings.NewReplacer("&", "&amp;")
)

// viewForms returns what the decoding view shows of v escaped for JSON
// and for HTML, where that is not v: for a secret like "p%41ss" echoed
// in a JSON string the view decodes the %41 too.
func viewForms(v string) []string {
	if !strings.ContainsAny(v, `%\&`) {
		return nil
	}
	var forms []string
	for _, outer := range []*strings.Replacer{jsonOuter, htmlOuter} {
		escaped := []byte(outer.Replace(v))
		var vw view
		if f := string(vw.of(escaped)); f != v {
			forms = append(forms, f)
		}
	}
	return forms
}
