package apiclient

import (
	"strings"
	"testing"
	"unicode"
)

// FuzzSanitize: whatever the server says, the message printed has no
// control character, stays within its cap, and never shows the client's
// token where it stands alone.
func FuzzSanitize(f *testing.F) {
	f.Add("token abc is unknown", "abc")
	f.Add("bad\x1b[31m\ntoken\x00", testToken)
	f.Add("ab\x07c", "abc")
	f.Add(strings.Repeat("é", 600), "t")
	f.Fuzz(func(t *testing.T, msg, token string) {
		if checkToken(token) != nil {
			return
		}
		c := &Client{token: token}
		got := c.sanitize(msg)
		for _, r := range got {
			if !unicode.IsPrint(r) {
				t.Fatalf("sanitize(%q) = %q holds %U", msg, got, r)
			}
		}
		if n := len([]rune(got)); n > MaxMessageRunes+3 {
			t.Fatalf("sanitize(%q) has %d runes", msg, n)
		}
		if token != "" {
			echoed := c.sanitize("say " + msg + " " + token + " end")
			if strings.Contains(echoed, " "+token+" end") {
				t.Fatalf("token shown: %q", echoed)
			}
		}
	})
}

// FuzzParseAddr: whatever address is given, an error never shows its
// user, password, path or query (only scheme and host), and an accepted
// address has neither user nor query.
func FuzzParseAddr(f *testing.F) {
	for _, seed := range []string{"http://127.0.0.1:14321", "u:SECRETX@h:1/SECRETX?SECRETX", "http://u:SECRETX@h/", "https://h/SECRETX?q=SECRETX", "ftp://h/SECRETX", "http://h:99999/SECRETX", "http://[::1]:1/base/", "h/SECRETX"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		u, err := ParseAddr("AGENT_VAULT_ADDR", addr)
		if err != nil {
			if strings.Contains(addr, "SECRETX") && strings.Contains(err.Error(), "SECRETX") {
				// Only a host may be shown: a secret in the host is the
				// host, which the user must see to fix.
				host := hostPart(addr)
				if i := strings.Index(addr, "://"); i >= 0 {
					host = hostPart(addr[i+3:])
				}
				if !strings.Contains(host, "SECRETX") {
					t.Fatalf("ParseAddr(%q) error shows more than scheme and host: %v", addr, err)
				}
			}
			return
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("ParseAddr(%q) accepted %+v", addr, u)
		}
	})
}
