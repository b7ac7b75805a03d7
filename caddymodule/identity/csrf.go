package identity

// The web UI's CSRF token. A login cookie may change something only
// with it: a browser sends the cookie on its own, to every page that
// asks, but another site can neither read the cookie nor this server's
// pages, so it cannot know the token. The token is derived from the
// cookie's secret (stateless: every broker of a cluster computes the
// same one, and it ends with the login). It only stops other sites:
// whoever holds the cookie can compute the token from its secret (and
// read it off any page), and so with the two change anything the
// login may. A program that receives the cookie (the browser sends it
// to every port of the host name) is therefore as strong as the login
// itself; README's Web UI section says how to keep that from happening.

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
)

// CSRFHeader carries the CSRF token of a cookie-authenticated JSON API
// request that changes something.
const CSRFHeader = "X-CSRF-Token"

// csrfLabel is what the cookie secret keys: a version, so that another
// derivation can never be confused with this one.
const csrfLabel = "agent-vault csrf v1"

// CSRFToken is the CSRF token of a login cookie's secret:
// base64url(HMAC-SHA256(key=secret, "agent-vault csrf v1")), unpadded.
func CSRFToken(cookieSecret string) string {
	m := hmac.New(sha256.New, []byte(cookieSecret))
	m.Write([]byte(csrfLabel))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// ValidCSRF reports, in constant time, whether token is the CSRF token
// of cookieSecret. An empty secret has no valid token.
func ValidCSRF(cookieSecret, token string) bool {
	if cookieSecret == "" || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(CSRFToken(cookieSecret)), []byte(token)) == 1
}

// checkCSRFHeader reports whether r carries exactly one CSRFHeader and
// it is the token of r's login cookie.
func checkCSRFHeader(r *http.Request) bool {
	h := r.Header.Values(CSRFHeader)
	if len(h) != 1 {
		return false
	}
	secret, found, err := loginCookieValue(r.Header.Values("Cookie"), LoginCookieName(r.TLS != nil))
	return err == nil && found && ValidCSRF(secret, h[0])
}
