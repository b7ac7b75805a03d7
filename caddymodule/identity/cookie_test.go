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
	c := LoginCookie("avc_x", 12*time.Hour, true)
	got := c.String()
	for _, want := range []string{"__Host-agent_vault_login=avc_x", "Path=/", "Max-Age=43200", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(got, want) {
			t.Errorf("cookie %q lacks %q", got, want)
		}
	}
	if c.Domain != "" || strings.Contains(got, "Domain") {
		t.Errorf("a __Host- cookie with a Domain: %q", got)
	}
	plain := LoginCookie("avc_x", time.Hour, false).String()
	if strings.Contains(plain, "Secure") || !strings.HasPrefix(plain, "agent_vault_login=avc_x;") {
		t.Errorf("plain HTTP cookie %q", plain)
	}
	if LoginCookieName(true) != SecureCookieName || LoginCookieName(false) != CookieName || SecureCookieName != "__Host-agent_vault_login" {
		t.Error("cookie names")
	}
	if LoginCookie("avc_x", time.Millisecond, false).MaxAge != 1 {
		t.Error("a sub-second ttl must still last a second, not become a session cookie or a deletion")
	}
	clear := ClearLoginCookie(true).String()
	if !strings.HasPrefix(clear, "__Host-agent_vault_login=;") || !strings.Contains(clear, "Max-Age=0") || !strings.Contains(clear, "HttpOnly") || !strings.Contains(clear, "Secure") {
		t.Errorf("clear cookie %q", clear)
	}
	if clear := ClearLoginCookie(false).String(); !strings.HasPrefix(clear, "agent_vault_login=;") {
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
		{"bearer wins over the cookie", req([]string{"Bearer avt_a"}, "avc_b"), "avt_a", false},
		{"cookie", req(nil, "avc_b"), "avc_b", true},
		{"empty header, cookie", req([]string{""}, "avc_b"), "avc_b", true},
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
		{"malformed header does not fall back to the cookie", req([]string{"Basic x"}, "avc_b")},
		{"two headers", req([]string{"Bearer avt_a", "Bearer avt_b"})},
		{"two cookies", req(nil, "avc_a", "avc_b")},
		{"cookie with an agent token", req(nil, "avt_a")},
		{"cookie with a login's bearer token", req(nil, "avo_a")},
		{"a login cookie's secret as a bearer", req([]string{"Bearer avc_a"})},
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

// TestRequestTokenScheme: over TLS only the __Host- cookie counts, over
// plain HTTP only the plain one; the other is ignored.
func TestRequestTokenScheme(t *testing.T) {
	req := func(tlsOn bool, cookie string) *http.Request {
		r := httptest.NewRequest("GET", "/api/v1/agents", nil)
		if tlsOn {
			r.TLS = &tls.ConnectionState{}
		}
		r.Header.Set("Cookie", cookie)
		return r
	}
	for _, tc := range []struct {
		tls    bool
		cookie string
		token  string
	}{
		{true, "__Host-agent_vault_login=avc_s", "avc_s"},
		{true, "agent_vault_login=avc_p; __Host-agent_vault_login=avc_s", "avc_s"},
		{false, "agent_vault_login=avc_p; __Host-agent_vault_login=avc_s", "avc_p"},
		{false, "agent_vault_login=avc_p", "avc_p"},
		{false, "other=1;agent_vault_login=avc_p ;x=\"y\"", "avc_p"},
	} {
		tok, fromCookie, err := RequestToken(req(tc.tls, tc.cookie))
		if err != nil || tok != tc.token || !fromCookie {
			t.Errorf("tls=%v %q: %q %v", tc.tls, tc.cookie, tok, err)
		}
	}
	for _, tc := range []struct {
		tls    bool
		cookie string
	}{
		{true, "agent_vault_login=avc_p"},
		{false, "__Host-agent_vault_login=avc_s"},
	} {
		if tok, _, err := RequestToken(req(tc.tls, tc.cookie)); err != ErrNoToken {
			t.Errorf("tls=%v %q: %q %v, want ErrNoToken (the other scheme's cookie is ignored)", tc.tls, tc.cookie, tok, err)
		}
	}
}

// TestRequestTokenMalformed: a Cookie header with a malformed pair, or
// a second one, named like the login cookie is refused, even where
// net/http would skip it and find one good cookie.
func TestRequestTokenMalformed(t *testing.T) {
	for _, tc := range []struct {
		tls     bool
		headers []string
	}{
		{false, []string{`agent_vault_login="avc_x; agent_vault_login=avc_good`}},
		{false, []string{`agent_vault_login="avc_x"`}},
		{false, []string{`agent_vault_login=avc_a\b; agent_vault_login=avc_good`}},
		{false, []string{`agent_vault_login=avo,x; agent_vault_login=avc_good`}},
		{false, []string{`agent_vault_login; agent_vault_login=avc_good`}},
		{false, []string{`Agent_Vault_Login=avc_x; agent_vault_login=avc_good`}},
		{false, []string{"agent_vault_login=avc_\x7f; agent_vault_login=avc_good"}},
		{false, []string{"agent_vault_login=avc_é; agent_vault_login=avc_good"}},
		{false, []string{"agent_vault_login=avc_a", "agent_vault_login=avc_b"}},
		{false, []string{"agent_vault_login=avc_a; x=1; agent_vault_login=avc_a"}},
		{true, []string{`__Host-agent_vault_login="avc_x; __Host-agent_vault_login=avc_good`}},
		{true, []string{`__host-agent_vault_login=avc_x; __Host-agent_vault_login=avc_good`}},
		{true, []string{"__Host-agent_vault_login=avc_a", "__Host-agent_vault_login=avc_b"}},
	} {
		r := httptest.NewRequest("GET", "/api/v1/agents", nil)
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		for _, h := range tc.headers {
			r.Header.Add("Cookie", h)
		}
		tok, _, err := RequestToken(r)
		var ue *UnauthenticatedError
		if tok != "" || !errors.As(err, &ue) || err == ErrNoToken {
			t.Errorf("%q: %q %v, want a refusal", tc.headers, tok, err)
		} else if strings.Contains(ue.Reason, "avc_") {
			t.Errorf("refusal %q repeats the cookie", ue.Reason)
		}
	}
}

func TestCheckCookieRequest(t *testing.T) {
	type hdr = map[string][]string
	const cannot = "a login cookie alone cannot change anything"
	for _, tc := range []struct {
		method string
		perm   Permission
		tls    bool
		h      hdr
		want   string // "" allowed, else a fragment of the refusal
	}{
		// Reading is never refused: it changes nothing, and the answer
		// goes to the browser, not to the page that caused it.
		{"GET", ReadAll, false, hdr{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, ""},
		{"HEAD", ReadAll, false, hdr{"Sec-Fetch-Site": {"cross-site"}}, ""},
		// A logout from this server's own pages, or with no browser
		// headers at all.
		{"POST", Logout, false, hdr{}, ""},
		{"POST", Logout, false, hdr{"Sec-Fetch-Site": {"same-origin"}}, ""},
		{"POST", Logout, false, hdr{"Sec-Fetch-Site": {"none"}}, ""},
		{"POST", Logout, false, hdr{"Origin": {"HTTP://Vault.Example:8080"}}, ""},
		{"POST", Logout, true, hdr{"Origin": {"https://vault.example:8080"}}, ""},
		// ... but not from elsewhere: another port of the host is the
		// same site, not the same origin.
		{"POST", Logout, false, hdr{"Sec-Fetch-Site": {"same-site"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Sec-Fetch-Site": {"cross-site"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Sec-Fetch-Site": {""}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Sec-Fetch-Site": {"same-origin", "same-origin"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"http://evil.example"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"null"}}, "Authorization: Bearer"},
		// Origin null from our own no-referrer page: only with
		// Sec-Fetch-Site same-origin, which pages cannot set.
		{"POST", Logout, false, hdr{"Origin": {"null"}, "Sec-Fetch-Site": {"same-origin"}}, ""},
		{"POST", Logout, false, hdr{"Origin": {"null"}, "Sec-Fetch-Site": {"cross-site"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"null"}, "Sec-Fetch-Site": {"same-site"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"null"}, "Sec-Fetch-Site": {"none"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"null", "null"}, "Sec-Fetch-Site": {"same-origin"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"http://vault.example"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"http://vault.example:3000"}}, "Authorization: Bearer"},
		{"POST", Logout, true, hdr{"Origin": {"http://vault.example:8080"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"https://vault.example:8080"}}, "Authorization: Bearer"},
		{"POST", Logout, false, hdr{"Origin": {"http://vault.example:8080", "http://vault.example:8080"}}, "Authorization: Bearer"},
		// Any other change: refused however it came, same origin too.
		{"DELETE", ManageSecrets, false, hdr{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"http://vault.example:8080"}}, cannot},
		{"PUT", ManageSecrets, false, hdr{}, cannot},
		{"PATCH", ManageAgents, true, hdr{"Origin": {"https://vault.example:8080"}}, cannot},
		{"POST", MintSession, false, hdr{}, cannot},
		{"POST", ManageOperators, false, hdr{"Sec-Fetch-Site": {"same-origin"}}, cannot},
		{"DELETE", Logout, false, hdr{}, cannot},
		{"OPTIONS", ReadAll, false, hdr{"Sec-Fetch-Site": {"cross-site"}}, cannot},
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
		err := CheckCookieRequest(r, tc.perm)
		var fe *ForbiddenError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %v tls=%v %v: refused: %v", tc.method, tc.perm, tc.tls, tc.h, err)
		case tc.want != "" && !errors.As(err, &fe):
			t.Errorf("%s %v tls=%v %v: got %v, want a *ForbiddenError", tc.method, tc.perm, tc.tls, tc.h, err)
		case tc.want != "" && !strings.Contains(fe.Reason, tc.want):
			t.Errorf("%s %v %v: refusal %q does not say %q", tc.method, tc.perm, tc.h, fe.Reason, tc.want)
		}
	}
	r := httptest.NewRequest("POST", "/x", nil)
	r.Host = ""
	r.Header.Set("Origin", "http://")
	if CheckCookieRequest(r, Logout) == nil {
		t.Error("an Origin against an empty Host passed")
	}
}

// TestCheckLoginRequest: a login from another site (login CSRF) is
// refused by the same rule as a cookie's logout; a client that is not a
// browser sends neither header and passes, whatever its Content-Type.
func TestCheckLoginRequest(t *testing.T) {
	type hdr = map[string][]string
	for _, tc := range []struct {
		h  hdr
		ok bool
	}{
		{hdr{}, true},
		{hdr{"Content-Type": {"text/plain"}}, true},
		{hdr{"Sec-Fetch-Site": {"same-origin"}, "Origin": {"http://vault.example:8080"}}, true},
		{hdr{"Sec-Fetch-Site": {"none"}}, true},
		{hdr{"Sec-Fetch-Site": {"cross-site"}}, false},
		{hdr{"Sec-Fetch-Site": {"same-site"}}, false},
		{hdr{"Origin": {"http://evil.example"}}, false},
		{hdr{"Origin": {"http://vault.example:3000"}}, false},
		{hdr{"Origin": {"null"}}, false},
		{hdr{"Origin": {strings.Repeat("o", 10000)}}, false},
	} {
		r := httptest.NewRequest("POST", "http://vault.example:8080/api/v1/login", nil)
		for k, vs := range tc.h {
			for _, v := range vs {
				r.Header.Add(k, v)
			}
		}
		err := CheckLoginRequest(r)
		var fe *ForbiddenError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%v: refused: %v", tc.h, err)
		case !tc.ok && (!errors.As(err, &fe) || !strings.Contains(fe.Reason, "may not log in")):
			t.Errorf("%v: got %v, want a *ForbiddenError saying it may not log in", tc.h, err)
		case !tc.ok && len(fe.Reason) > 400:
			t.Errorf("%v: the refusal repeats a long header: %d bytes", tc.h, len(fe.Reason))
		}
	}
}

// FuzzRequestTokenCookie: whatever the Cookie header, RequestToken
// never panics, and a token it accepts is an operator login token that
// the header holds exactly once, as the one pair of that name.
func FuzzRequestTokenCookie(f *testing.F) {
	for _, s := range []string{
		"agent_vault_login=avc_x", "agent_vault_login=avc_x; agent_vault_login=avc_y", `agent_vault_login="avc_x"`,
		"a=1; agent_vault_login=avc_x ;b=2", "agent_vault_login", "agent_vault_login=", "AGENT_VAULT_LOGIN=avc_x",
		"__Host-agent_vault_login=avc_s", "agent_vault_login=avc_\x00", ";;;", "",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, header string, tlsOn bool) {
		r := httptest.NewRequest("GET", "/api/v1/agents", nil)
		if tlsOn {
			r.TLS = &tls.ConnectionState{}
		}
		r.Header["Cookie"] = []string{header}
		tok, fromCookie, err := RequestToken(r)
		if err != nil {
			var ue *UnauthenticatedError
			if tok != "" || fromCookie || !errors.As(err, &ue) {
				t.Fatalf("%q: %q %v %v", header, tok, fromCookie, err)
			}
			return
		}
		if !fromCookie || KindOf(tok) != KindLoginCookie || checkTokenText(tok) != nil || strings.ContainsAny(tok, "\";,\\") {
			t.Fatalf("%q: accepted %q", header, tok)
		}
		name := LoginCookieName(tlsOn)
		if n := strings.Count(strings.ToLower(header), strings.ToLower(name)+"="); n < 1 || !strings.Contains(header, name+"="+tok) {
			t.Fatalf("%q: %q is not the header's %s pair", header, tok, name)
		}
	})
}
