package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseServices never panics, and what it accepts holds no empty or
// padded entry and no comma.
func FuzzParseServices(f *testing.F) {
	for _, s := range []string{"github", "a,b", " a , b ", "", ",", "a,,b", "*", " ", "a,", "\t,a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		list, err := parseServices(s)
		if err != nil {
			if list != nil {
				t.Errorf("%q: error %v with a list %q", s, err, list)
			}
			return
		}
		if len(list) == 0 {
			t.Errorf("%q: accepted as no service", s)
		}
		for _, name := range list {
			if name == "" || name != strings.TrimSpace(name) || strings.Contains(name, ",") {
				t.Errorf("%q: entry %q", s, name)
			}
		}
	})
}

// splitHeader never panics; an accepted header has a name without ':'
// or '=' and round-trips.
func FuzzSplitHeader(f *testing.F) {
	for _, s := range []string{"X-Key: {{ K }}", "X=v", ":v", "=", "novalue", "A: b: c", "A=b:c", " X : y "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, value, err := splitHeader(s)
		if err != nil {
			if strings.Contains(err.Error(), s) && s != "" && utf8.ValidString(s) && len(s) > 3 {
				t.Errorf("the error repeats the input: %v", err)
			}
			return
		}
		if strings.ContainsAny(name, ":=") {
			t.Errorf("%q: name %q", s, name)
		}
		if !strings.Contains(s, value) {
			t.Errorf("%q: value %q is not from the input", s, value)
		}
	})
}

// trimLineBreak drops at most one line break, and nothing else.
func FuzzTrimLineBreak(f *testing.F) {
	for _, s := range []string{"", "\n", "\r\n", "a\n\n", "a\r", "a\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := string(b)
		out := string(trimLineBreak(b))
		if out != in && out+"\n" != in && out+"\r\n" != in {
			t.Errorf("%q trimmed to %q", in, out)
		}
	})
}

// FuzzEscapeJSON: the escaped encoding of any string decodes to the same
// string and holds none of the runes a terminal acts on.
func FuzzEscapeJSON(f *testing.F) {
	for _, seed := range []string{"plain", "a\u009bb", "\u202egnp.exe", "\u2066\u2069\u200e\u200f\u007f", "é\x00\xff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc, err := json.Marshal(map[string]string{"v": s})
		if err != nil {
			t.Fatal(err)
		}
		out := escapeJSON(enc)
		var back map[string]string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("escapeJSON(%q) = %q: not JSON: %v", enc, out, err)
		}
		var want map[string]string
		json.Unmarshal(enc, &want)
		if back["v"] != want["v"] {
			t.Fatalf("escapeJSON changed the value: %q -> %q", want["v"], back["v"])
		}
		for _, r := range string(out) {
			if escapedRune(r) {
				t.Fatalf("escapeJSON(%q) left %U raw", enc, r)
			}
		}
	})
}
