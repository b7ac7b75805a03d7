package webui

// The one-line flash after a write. It travels in the redirect's query
// (POST-redirect-GET), so a crafted link could carry any text ("get
// the new token at https://evil.example") to a page that would show it
// as the server's own. So the UI signs what it puts there with an HMAC
// keyed by the login's CSRF token (which another site cannot know) and
// shows only a flash whose signature is this login's; /login, signed
// out, shows only the notes of loginNotes.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
)

// flashLabel separates this HMAC's inputs from any other use of the
// key.
const flashLabel = "agent-vault flash v1\x00"

// loginNotes are the only flashes /login shows, by their ?ok= code.
var loginNotes = map[string]string{
	"signed-out": "Signed out.",
}

// flashSig is the signature of a flash of kind ("ok", "error") saying
// msg, for the login whose CSRF token is csrf.
func flashSig(csrf, kind, msg string) string {
	m := hmac.New(sha256.New, []byte(csrf))
	m.Write([]byte(flashLabel + kind + "\x00" + msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// flashQuery is the query of a redirect carrying a signed flash.
func flashQuery(csrf, kind, msg string) url.Values {
	return url.Values{kind: {msg}, "sig": {flashSig(csrf, kind, msg)}}
}

// flashOf is the flash q carries for the login of csrf: its kind and
// text, or "" when there is none or it is not signed for this login.
func flashOf(csrf string, q url.Values, loginPage bool) (kind, msg string) {
	if loginPage {
		if n, ok := loginNotes[q.Get("ok")]; ok {
			return "ok", n
		}
		return "", ""
	}
	for _, k := range []string{"error", "ok"} {
		if v := q.Get(k); v != "" {
			if csrf != "" && hmac.Equal([]byte(q.Get("sig")), []byte(flashSig(csrf, k, v))) {
				return k, oneLine(v)
			}
			return "", ""
		}
	}
	return "", ""
}
