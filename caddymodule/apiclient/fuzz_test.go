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
