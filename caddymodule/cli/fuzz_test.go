package cli

import (
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
