package identity

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestLoginCookie(t *testing.T) {
	c := LoginCookie("avo_x", 12*time.Hour, true)
	got := c.String()
	for _, want := range []string{"agent_vault_login=avo_x", "Path=/", "Max-Age=43200", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(got, want) {
			t.Errorf("cookie %q lacks %q", got, want)
		}
	}
	if strings.Contains(LoginCookie("avo_x", time.Hour, false).String(), "Secure") {
		t.Error("Secure over plain HTTP")
	}
	if LoginCookie("avo_x", time.Millisecond, false).MaxAge != 1 {
		t.Error("a sub-second ttl must still last a second, not become a session cookie or a deletion")
	}
	clear := ClearLoginCookie(true).String()
	if !strings.Contains(clear, "agent_vault_login=;") || !strings.Contains(clear, "Max-Age=0") || !strings.Contains(clear, "HttpOnly") {
		t.Errorf("clear cookie %q", clear)
	}
}

func TestRequestToken(t *testing.T) {
	req := func(auth []string, cookies ...string) *http.Request {
		r := httptest.NewRequest("GET", "/api/v1/agents", nil)
		for _, a := range auth {
			r.Header.Add("Authorization", a)
		}
		for _, c := range cookies {
			r.AddCookie(&http.Cookie{Name: CookieName, Value: c})
		}
		return r
	}
	for _, tc := range []struct {
		name       string
		r          *http.Request
		token      string
		fromCookie bool
	}{
		{"bearer", req([]string{"Bearer avt_a"}), "avt_a", false},
		{"bearer wins over the cookie", req([]string{"Bearer avt_a"}, "avo_b"), "avt_a", false},
		{"cookie", req(nil, "avo_b"), "avo_b", true},
		{"empty header, cookie", req([]string{""}, "avo_b"), "avo_b", true},
	} {
		tok, fromCookie, err := RequestToken(tc.r)
		if err != nil || tok != tc.token || fromCookie != tc.fromCookie {
			t.Errorf("%s: %q %v %v", tc.name, tok, fromCookie, err)
		}
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
	}{
		{"malformed header does not fall back to the cookie", req([]string{"Basic x"}, "avo_b")},
		{"two headers", req([]string{"Bearer avt_a", "Bearer avt_b"})},
		{"two cookies", req(nil, "avo_a", "avo_b")},
		{"cookie with an agent token", req(nil, "avt_a")},
		{"cookie with another token", req(nil, "ava_0123456789abcdef")},
		{"empty cookie", req(nil, "")},
		{"nothing", req(nil)},
	} {
		tok, _, err := RequestToken(tc.r)
		var ue *UnauthenticatedError
		if tok != "" || !errors.As(err, &ue) {
			t.Errorf("%s: %q %v", tc.name, tok, err)
		}
	}
	if _, _, err := RequestToken(req(nil)); err != ErrNoToken {
		t.Errorf("no credentials: %v", err)
	}
}

func TestCheckCookieRequest(t *testing.T) {
	type hdr = map[string][]string
	for _, tc := range []struct {
		method string
		tls    bool
		h      hdr
		ok     bool
	}{
		{"GET", false, hdr{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, true},
		{"HEAD", false, hdr{"Sec-Fetch-Site": {"cross-site"}}, true},
		{"POST", false, hdr{}, true},
		{"POST", false, hdr{"Sec-Fetch-Site": {"same-origin"}}, true},
		{"POST", false, hdr{"Sec-Fetch-Site": {"none"}}, true},
		{"DELETE", false, hdr{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"http://vault.example:8080"}}, true},
		{"PUT", false, hdr{"Origin": {"HTTP://Vault.Example:8080"}}, true},
		{"PATCH", true, hdr{"Origin": {"https://vault.example:8080"}}, true},
		{"POST", false, hdr{"Sec-Fetch-Site": {"same-site"}}, false},
		{"POST", false, hdr{"Sec-Fetch-Site": {"cross-site"}}, false},
		{"POST", false, hdr{"Sec-Fetch-Site": {""}}, false},
		{"POST", false, hdr{"Sec-Fetch-Site": {"same-origin", "same-origin"}}, false},
		{"POST", false, hdr{"Origin": {"http://evil.example"}}, false},
		{"POST", false, hdr{"Origin": {"null"}}, false},
		{"POST", false, hdr{"Origin": {"http://vault.example"}}, false},
		{"POST", true, hdr{"Origin": {"http://vault.example:8080"}}, false},
		{"POST", false, hdr{"Origin": {"https://vault.example:8080"}}, false},
		{"POST", false, hdr{"Origin": {"http://vault.example:8080", "http://vault.example:8080"}}, false},
		{"OPTIONS", false, hdr{"Sec-Fetch-Site": {"cross-site"}}, false},
	} {
		r := httptest.NewRequest(tc.method, "http://vault.example:8080/api/v1/agents", nil)
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		for k, vs := range tc.h {
			for _, v := range vs {
				r.Header.Add(k, v)
			}
		}
		err := CheckCookieRequest(r)
		var fe *ForbiddenError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s tls=%v %v: refused: %v", tc.method, tc.tls, tc.h, err)
		case !tc.ok && !errors.As(err, &fe):
			t.Errorf("%s tls=%v %v: got %v, want a *ForbiddenError", tc.method, tc.tls, tc.h, err)
		case !tc.ok && !strings.Contains(fe.Reason, "Authorization: Bearer"):
			t.Errorf("refusal %q does not say what to do", fe.Reason)
		}
	}
	r := httptest.NewRequest("POST", "/x", nil)
	r.Host = ""
	r.Header.Set("Origin", "http://")
	if CheckCookieRequest(r) == nil {
		t.Error("an Origin against an empty Host passed")
	}
}
