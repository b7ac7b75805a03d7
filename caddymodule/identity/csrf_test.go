package identity

import (
	"crypto/tls"
	"errors"
	"net/http/httptest"
	"testing"
)

// TestCSRFToken: the token is the documented derivation, differs per
// cookie secret, and only the exact token is valid.
func TestCSRFToken(t *testing.T) {
	a, _, err := NewToken(KindLoginCookie)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := NewToken(KindLoginCookie)
	ta, tb := CSRFToken(a), CSRFToken(b)
	if ta == tb || ta == "" || len(ta) != 43 {
		t.Fatalf("tokens %q %q", ta, tb)
	}
	if CSRFToken(a) != ta {
		t.Fatal("not deterministic")
	}
	// Known answer: HMAC-SHA256(key "k", "agent-vault csrf v1").
	if got := CSRFToken("k"); got != "igGuabeT_bU6S4EbUqnjzXpxE3-6HZu2nRll2ZBZ9z4" {
		t.Errorf("CSRFToken(k) = %s, want igGuabeT_bU6S4EbUqnjzXpxE3-6HZu2nRll2ZBZ9z4", got)
	}
	if !ValidCSRF(a, ta) || ValidCSRF(a, tb) || ValidCSRF(a, "") || ValidCSRF("", CSRFToken("")) || ValidCSRF(a, ta[:42]) || ValidCSRF(a, a) {
		t.Fatal("ValidCSRF accepted a wrong token or refused the right one")
	}
}

// TestCheckCookieRequestCSRF: an unsafe cookie request passes with the
// cookie's CSRF token in X-CSRF-Token and the same-origin rule; without
// the header, with a wrong or doubled one, or cross-origin, it is
// refused as before.
func TestCheckCookieRequestCSRF(t *testing.T) {
	secret, _, _ := NewToken(KindLoginCookie)
	other, _, _ := NewToken(KindLoginCookie)
	good := CSRFToken(secret)
	for _, tc := range []struct {
		name   string
		tls    bool
		cookie string
		csrf   []string
		h      map[string]string
		ok     bool
	}{
		{"token", false, CookieName, []string{good}, nil, true},
		{"token same origin", false, CookieName, []string{good}, map[string]string{"Origin": "http://vault.example:8080", "Sec-Fetch-Site": "same-origin"}, true},
		{"token over tls", true, SecureCookieName, []string{good}, map[string]string{"Origin": "https://vault.example:8080"}, true},
		{"no header", false, CookieName, nil, nil, false},
		{"empty header", false, CookieName, []string{""}, nil, false},
		{"wrong token", false, CookieName, []string{CSRFToken(other)}, nil, false},
		{"the cookie itself", false, CookieName, []string{secret}, nil, false},
		{"two headers", false, CookieName, []string{good, good}, nil, false},
		{"cross-site", false, CookieName, []string{good}, map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
		{"same-site", false, CookieName, []string{good}, map[string]string{"Sec-Fetch-Site": "same-site"}, false},
		{"other origin", false, CookieName, []string{good}, map[string]string{"Origin": "http://evil.example"}, false},
		{"cookie of the other scheme", true, CookieName, []string{good}, nil, false},
	} {
		r := httptest.NewRequest("PUT", "http://vault.example:8080/api/v1/credentials/x", nil)
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		r.Header.Set("Cookie", tc.cookie+"="+secret)
		for _, v := range tc.csrf {
			r.Header.Add(CSRFHeader, v)
		}
		for k, v := range tc.h {
			r.Header.Set(k, v)
		}
		err := CheckCookieRequest(r, ManageSecrets)
		var fe *ForbiddenError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case !tc.ok && !errors.As(err, &fe):
			t.Errorf("%s: got %v, want a *ForbiddenError", tc.name, err)
		}
	}
}
