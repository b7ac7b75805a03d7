package caddymodule

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestParseProxyAuthorization(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		header, want string
		ok           bool
	}{
		{"Basic " + b64("av:avs_tok"), "avs_tok", true},
		{"basic " + b64("av:avs_tok"), "avs_tok", true},
		{"Basic " + b64("avs_tok:"), "avs_tok", true},
		{"Bearer avs_tok", "avs_tok", true},
		{"Bearer   avs_tok  ", "avs_tok", true},
		{"", "", false},
		{"Basic", "", false},
		{"Basic !!!", "", false},
		{"Basic " + b64("nocolon"), "", false},
		{"Basic " + b64(":"), "", false},
		{"Bearer ", "", false},
		{"Digest x", "", false},
		{"Bearer " + strings.Repeat("a", maxProxyAuthLen), "", false},
	}
	for _, tc := range tests {
		got, err := parseProxyAuthorization(tc.header)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseProxyAuthorization(%.40q) = %q, %v; want %q ok=%v", tc.header, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseProxyAuthorization(f *testing.F) {
	for _, s := range []string{"Basic YXY6dG9r", "Bearer tok", "", "Basic", "Basic Og==", "x y z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := parseProxyAuthorization(h)
		if err == nil && tok == "" {
			t.Fatalf("accepted %q with an empty token", h)
		}
		if err != nil && tok != "" {
			t.Fatalf("returned a token with an error for %q", h)
		}
		if err != nil && strings.Contains(err.Error(), h) && len(h) > 8 {
			t.Fatalf("error echoes the header: %v", err)
		}
	})
}
