package identity

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// CookieName is the name of the cookie that carries an operator's login
// token for browsers over plain HTTP; SecureCookieName over TLS.
const CookieName = "agent_vault_login"

// SecureCookieName is the login cookie's name over TLS. Browsers keep
// a __Host- cookie only if it is Secure, has Path=/ and no Domain, so
// no other host (a sibling subdomain) and no plain-HTTP page can set
// one that the server would take for its own.
const SecureCookieName = "__Host-" + CookieName

// LoginCookieName is the login cookie's name for a request over TLS
// (secure) or not.
func LoginCookieName(secure bool) string {
	if secure {
		return SecureCookieName
	}
	return CookieName
}

// LoginCookie is the cookie POST /api/v1/login sets: the login's
// cookie secret (KindLoginCookie, never its bearer token: see there
// for why), HttpOnly (no script reads it), SameSite=Strict, Path=/, no
// Domain, lasting ttl (at least a second); over TLS (secure) it is
// named SecureCookieName and Secure.
func LoginCookie(secret string, ttl time.Duration, secure bool) *http.Cookie {
	return &http.Cookie{
		Name:     LoginCookieName(secure),
		Value:    secret,
		Path:     "/",
		MaxAge:   max(1, int(ttl/time.Second)),
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteStrictMode,
	}
}

// ClearLoginCookie is the cookie POST /api/v1/logout sets: the login
// cookie of the same scheme, emptied and expired at once.
func ClearLoginCookie(secure bool) *http.Cookie {
	c := LoginCookie("", 0, secure)
	c.MaxAge = -1
	return c
}

// RequestToken returns the credential of r: the Authorization header's
// Bearer token when the header is present (it wins over the cookie),
// else the login cookie's secret, which must be a login cookie secret
// (KindLoginCookie: the cookie never carries another kind, so a planted
// token of another kind is refused, and ParseBearer refuses a cookie
// secret sent as a Bearer).
// Only the cookie of r's scheme counts (SecureCookieName over TLS,
// CookieName otherwise); the other is ignored. fromCookie tells which,
// since a cookie-authenticated unsafe request must also pass
// CheckCookieRequest. Errors are *UnauthenticatedError, or ErrNoToken
// when r carries neither. More than one Authorization header or login
// cookie is refused rather than guessed between, and so is a Cookie
// header with a malformed pair named like the login cookie (a parser
// that skipped it could take another cookie than the browser meant).
func RequestToken(r *http.Request) (token string, fromCookie bool, err error) {
	switch h := r.Header.Values("Authorization"); {
	case len(h) > 1:
		return "", false, &UnauthenticatedError{Reason: "more than one Authorization header"}
	case len(h) == 1 && h[0] != "":
		token, err := ParseBearer(h[0])
		return token, false, err
	}
	name := LoginCookieName(r.TLS != nil)
	value, found, err := loginCookieValue(r.Header.Values("Cookie"), name)
	switch {
	case err != nil:
		return "", false, err
	case !found:
		return "", false, ErrNoToken
	}
	if err := checkTokenText(value); err != nil || KindOf(value) != KindLoginCookie {
		return "", false, &UnauthenticatedError{Reason: "the " + name + " cookie does not hold a login: log in again"}
	}
	return value, true, nil
}

// loginCookieValue reads the Cookie headers itself (net/http skips
// pairs it cannot parse) and returns the value of the one pair named
// name. A pair whose name is name in another case or with a malformed
// value, or a second pair, is an error.
func loginCookieValue(headers []string, name string) (value string, found bool, err error) {
	for _, h := range headers {
		for pair := range strings.SplitSeq(h, ";") {
			pair = strings.Trim(pair, " \t")
			n, v, hasValue := strings.Cut(pair, "=")
			n = strings.Trim(n, " \t")
			if !strings.EqualFold(n, name) {
				continue
			}
			if n != name || !hasValue || !cookieValue(v) {
				return "", false, &UnauthenticatedError{Reason: "a malformed " + name + " cookie: log in again"}
			}
			if found {
				return "", false, &UnauthenticatedError{Reason: "more than one " + name + " cookie: log in again"}
			}
			value, found = v, true
		}
	}
	return value, found, nil
}

// cookieValue: RFC 6265's cookie-octets, without the optional quotes
// (a login cookie is never quoted).
func cookieValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

// CookieCannotChange is the reason of CheckCookieRequest's refusal of
// a cookie-authenticated request that would change something (403).
const CookieCannotChange = "a login cookie alone cannot change anything: send the login's token as a Bearer header (or the web UI's " + CSRFHeader + " header)"

// CheckCookieRequest decides whether r, authenticated by the login
// cookie, may use a route needing perm. A browser sends the cookie on
// its own, and to every port of the host (cookies ignore ports: any
// program listening on it may receive the cookie and replay it). The
// cookie with no other header may only GET and HEAD, and POST
// /api/v1/logout (perm Logout), which must also come from this
// server's own pages (checkSameOrigin). Any other request needs the
// login's CSRF token in the CSRFHeader (the web UI sends it: see
// CSRFToken) and must pass checkSameOrigin too. That stops other web
// sites, not a holder of the cookie: the token is derived from the
// cookie's secret, so a program that received the cookie (another port
// of the same host the browser visited) can compute it and send both,
// and is as strong as the login (README, Web UI, "Residual risk").
// Without the header, or
// with a wrong one, it is refused (a *ForbiddenError saying
// CookieCannotChange): a change needs the token, or the login's bearer
// token as a Bearer header. Requests with a Bearer header need no such
// check: nothing sends that header on its own.
func CheckCookieRequest(r *http.Request, perm Permission) error {
	switch {
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return nil
	case perm == Logout && r.Method == http.MethodPost:
		return checkSameOrigin(r, "may not use the login cookie", "send the login token as Authorization: Bearer instead")
	case checkCSRFHeader(r):
		return checkSameOrigin(r, "may not use the login cookie", "use this server's own pages, or send the login token as Authorization: Bearer")
	}
	return &ForbiddenError{Reason: CookieCannotChange}
}

// CheckLoginRequest refuses (403) a login another site may have made a
// browser send (login CSRF: a form posting the attacker's name and
// password logs the victim's browser into the attacker's account, or
// spends a real operator's failed-login budget): the rule of
// CheckSameOrigin. API clients (curl, the CLI) send neither header and
// pass; no Content-Type is required of them. The rule is
// checkSameOrigin's, the one CheckCookieRequest applies to a logout.
func CheckLoginRequest(r *http.Request) error {
	return checkSameOrigin(r, "may not log in", "log in from this server's own pages, or from a client that is not a browser")
}

// checkSameOrigin is the one rule for a request a browser may have
// sent on another site's behalf: Sec-Fetch-Site must be absent,
// "same-origin" or "none", and Origin absent or this server's own
// origin (http or https, as r came, and r.Host), or "null" with
// Sec-Fetch-Site "same-origin" (what a browser sends from a page whose
// Referrer-Policy is no-referrer). "same-site" is
// refused: another port of the same host is the same site. The
// *ForbiddenError says that such a request "what" and "how" to do
// instead.
func checkSameOrigin(r *http.Request, what, how string) error {
	switch site := r.Header.Values("Sec-Fetch-Site"); {
	case len(site) > 1:
		return &ForbiddenError{Reason: "a request with more than one Sec-Fetch-Site header " + what + "; " + how}
	case len(site) == 1 && site[0] != "same-origin" && site[0] != "none":
		return &ForbiddenError{Reason: fmt.Sprintf("a cross-origin request (Sec-Fetch-Site: %s) %s; %s", quoteName(site[0]), what, how)}
	}
	origin := r.Header.Values("Origin")
	sameOrigin := len(r.Header.Values("Sec-Fetch-Site")) == 1 && r.Header.Get("Sec-Fetch-Site") == "same-origin"
	switch {
	case len(origin) == 1 && origin[0] == "null" && sameOrigin:
		// A page with Referrer-Policy: no-referrer (the web UI's)
		// makes the browser send Origin "null" on its own form posts;
		// Sec-Fetch-Site, which no page can set, says it is ours.
		return nil
	case len(origin) > 1:
		return &ForbiddenError{Reason: "a request with more than one Origin header " + what + "; " + how}
	case len(origin) == 1:
		scheme := "http://"
		if r.TLS != nil {
			scheme = "https://"
		}
		if own := scheme + r.Host; r.Host == "" || !strings.EqualFold(origin[0], own) {
			return &ForbiddenError{Reason: fmt.Sprintf("a request from origin %s %s (this server is %s); %s", quoteName(origin[0]), what, own, how)}
		}
	}
	return nil
}
