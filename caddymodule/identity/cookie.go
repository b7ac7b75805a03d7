package identity

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// CookieName is the name of the cookie that carries an operator's login
// token for browsers.
const CookieName = "agent_vault_login"

// LoginCookie is the cookie POST /api/v1/login sets: the login token,
// HttpOnly (no script reads it), SameSite=Strict, Path=/, Secure when
// the login came over TLS (secure), lasting ttl (at least a second).
func LoginCookie(token string, ttl time.Duration, secure bool) *http.Cookie {
	return &http.Cookie{
		Name:     CookieName,
		Value:    token,
		Path:     "/",
		MaxAge:   max(1, int(ttl/time.Second)),
		HttpOnly: true,
		Secure:   secure,
		SameSite: http.SameSiteStrictMode,
	}
}

// ClearLoginCookie is the cookie POST /api/v1/logout sets: the login
// cookie, emptied and expired at once.
func ClearLoginCookie(secure bool) *http.Cookie {
	c := LoginCookie("", 0, secure)
	c.MaxAge = -1
	return c
}

// RequestToken returns the credential of r: the Authorization header's
// Bearer token when the header is present (it wins over the cookie),
// else the login cookie's token, which must be an operator login token
// (the cookie never carries another kind, so a planted one is refused).
// fromCookie tells which, since a cookie-authenticated unsafe request
// must also pass CheckCookieRequest. Errors are *UnauthenticatedError,
// ErrNoToken when r carries neither; more than one Authorization header
// or login cookie is refused rather than guessed between.
func RequestToken(r *http.Request) (token string, fromCookie bool, err error) {
	switch h := r.Header.Values("Authorization"); {
	case len(h) > 1:
		return "", false, &UnauthenticatedError{Reason: "more than one Authorization header"}
	case len(h) == 1 && h[0] != "":
		token, err := ParseBearer(h[0])
		return token, false, err
	}
	var found []string
	for _, c := range r.Cookies() {
		if c.Name == CookieName {
			found = append(found, c.Value)
		}
	}
	switch {
	case len(found) == 0:
		return "", false, ErrNoToken
	case len(found) > 1:
		return "", false, &UnauthenticatedError{Reason: "more than one " + CookieName + " cookie: log in again"}
	}
	if err := checkTokenText(found[0]); err != nil || KindOf(found[0]) != KindOperator {
		return "", false, &UnauthenticatedError{Reason: "the " + CookieName + " cookie does not hold a login token: log in again"}
	}
	return found[0], true, nil
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
