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

// LoginCookie is the cookie POST /api/v1/login sets: the login token,
// HttpOnly (no script reads it), SameSite=Strict, Path=/, no Domain,
// lasting ttl (at least a second); over TLS (secure) it is named
// SecureCookieName and Secure.
func LoginCookie(token string, ttl time.Duration, secure bool) *http.Cookie {
	return &http.Cookie{
		Name:     LoginCookieName(secure),
		Value:    token,
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
// else the login cookie's token, which must be an operator login token
// (the cookie never carries another kind, so a planted one is refused).
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
	if err := checkTokenText(value); err != nil || KindOf(value) != KindOperator {
		return "", false, &UnauthenticatedError{Reason: "the " + name + " cookie does not hold a login token: log in again"}
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

// CheckCookieRequest refuses (with a *ForbiddenError) an unsafe request
// (any method but GET and HEAD) authenticated by the login cookie that
// another site may have made the browser send: Sec-Fetch-Site must be
// absent, "same-origin" or "none", and Origin absent or this server's
// own origin (http or https, as r came, and r.Host). Requests with a
// Bearer header need no such check: nothing sends that header on its
// own.
func CheckCookieRequest(r *http.Request) error {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	const how = "send the login token as Authorization: Bearer instead"
	switch site := r.Header.Values("Sec-Fetch-Site"); {
	case len(site) > 1:
		return &ForbiddenError{Reason: "a request with more than one Sec-Fetch-Site header may not use the login cookie; " + how}
	case len(site) == 1 && site[0] != "same-origin" && site[0] != "none":
		return &ForbiddenError{Reason: fmt.Sprintf("a cross-origin request (Sec-Fetch-Site: %q) may not use the login cookie; %s", site[0], how)}
	}
	origin := r.Header.Values("Origin")
	switch {
	case len(origin) > 1:
		return &ForbiddenError{Reason: "a request with more than one Origin header may not use the login cookie; " + how}
	case len(origin) == 1:
		scheme := "http://"
		if r.TLS != nil {
			scheme = "https://"
		}
		if own := scheme + r.Host; r.Host == "" || !strings.EqualFold(origin[0], own) {
			return &ForbiddenError{Reason: fmt.Sprintf("a request from origin %q may not use the login cookie of %s; %s", origin[0], own, how)}
		}
	}
	return nil
}
