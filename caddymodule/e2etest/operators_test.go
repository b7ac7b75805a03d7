package e2etest

// Issue 10, operators: accounts with roles, logins as a bearer token
// and as a cookie (HttpOnly, SameSite=Strict, refused cross-site),
// logout, and the rate limit on failed logins per address and per name.

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

func TestOperatorsAndLogin(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	const credValue = "ghp_operatorJourneyValue0123456789"
	s.putCredential("GITHUB_TOKEN", credValue)

	// The admin token creates the first owner; the owner the others.
	owner := s.createOperator("olga", "owner-password-0123", "owner")
	if owner.Name != "olga" || owner.Role != "owner" || owner.CreatedAt.IsZero() {
		t.Fatalf("POST /api/v1/operators: %+v", owner)
	}
	ol := s.login("olga", "owner-password-0123")
	if ol.Role != "owner" || time.Until(ol.ExpiresAt) < time.Hour || time.Until(ol.ExpiresAt) > 13*time.Hour {
		t.Errorf("owner's login: role %q expires in %v, want owner and about 12h", ol.Role, time.Until(ol.ExpiresAt))
	}
	if tokenBits(ol.Token) < 128 {
		t.Errorf("login token %q has %d bits, want >= 128", ol.Token, tokenBits(ol.Token))
	}
	ownerC := bearer(ol.Token)
	s.must(ownerC, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "vera", Password: "viewer-password-0123", Role: "viewer"}, 201, nil)
	s.must(ownerC, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "adam", Password: "admin-password-0123", Role: "admin"}, 201, nil)
	s.must(ownerC, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "otto", Password: "owner2-password-0123", Role: "owner"}, 201, nil)
	for _, c := range []struct {
		body  apiwire.OperatorCreateRequest
		want  int
		words string
	}{
		{apiwire.OperatorCreateRequest{Name: "shorty", Password: "elevenchars", Role: "viewer"}, 400, "12"},
		{apiwire.OperatorCreateRequest{Name: "nopass", Password: "", Role: "viewer"}, 400, "password"},
		{apiwire.OperatorCreateRequest{Name: "boss", Password: "a-long-password-0123", Role: "superuser"}, 400, "role"},
		{apiwire.OperatorCreateRequest{Name: "Bad Name", Password: "a-long-password-0123", Role: "viewer"}, 400, "name"},
		{apiwire.OperatorCreateRequest{Name: "vera", Password: "a-long-password-0123", Role: "viewer"}, 409, "vera"},
	} {
		r := s.call(ownerC, "POST", "/api/v1/operators", c.body)
		if r.status != c.want || !strings.Contains(r.errText(), c.words) {
			t.Errorf("POST /api/v1/operators %s/%s: %s, want %d saying %q", c.body.Name, c.body.Role, r, c.want, c.words)
		}
		if c.body.Password != "" {
			mustNotContain(t, "error body", r.body, c.body.Password)
		}
	}
	var ops apiwire.OperatorList
	r := s.must(ownerC, "GET", "/api/v1/operators", nil, 200, &ops)
	names := []string{}
	for _, o := range ops.Operators {
		names = append(names, o.Name+":"+o.Role)
	}
	if !slices.Equal(names, []string{"adam:admin", "olga:owner", "otto:owner", "vera:viewer"}) {
		t.Errorf("GET /api/v1/operators: %v", names)
	}
	for _, pw := range []string{"viewer-password-0123", "admin-password-0123", "owner-password-0123", "argon2"} {
		mustNotContain(t, "GET /api/v1/operators", r.body, pw)
	}

	// Login: token and cookie.
	lr := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "vera", Password: "viewer-password-0123"})
	if lr.status != 200 {
		t.Fatalf("login: %s", lr)
	}
	var vl apiwire.Login
	if err := json.Unmarshal([]byte(lr.body), &vl); err != nil || vl.Role != "viewer" || !strings.HasPrefix(vl.Token, "avo_") {
		t.Fatalf("login answer: %s", lr.body)
	}
	var cookie *http.Cookie
	for _, c := range lr.resp.Cookies() {
		if c.Name == loginCookie {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("login set no %s cookie: %v", loginCookie, lr.header["Set-Cookie"])
	}
	setCookie := strings.Join(lr.header["Set-Cookie"], "\n")
	// The cookie is a secret of its own (avc_), never the bearer token:
	// browsers send cookies to every port of the host, so another local
	// listener may receive it; alone it can only read and log out.
	if cookie.Value == vl.Token || !strings.HasPrefix(cookie.Value, "avc_") || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.MaxAge <= 0 {
		t.Errorf("login cookie %q: want an avc_ secret other than the token, HttpOnly, SameSite=Strict, Path=/, Max-Age > 0", setCookie)
	}
	if cookie.Secure {
		t.Errorf("login cookie over plain http is Secure (a browser would drop it): %q", setCookie)
	}
	if lr.header.Get("Cache-Control") != "no-store" {
		t.Errorf("the login answer is cacheable: Cache-Control %q", lr.header.Get("Cache-Control"))
	}
	viaCookie := cred{cookie: cookie.Value}
	s.must(viaCookie, "GET", "/api/v1/services", nil, 200, nil)
	// The bearer token in the cookie, or the cookie's secret as a
	// bearer token, is no login at all.
	if r := s.call(cred{cookie: vl.Token}, "GET", "/api/v1/services", nil); r.status != 401 {
		t.Errorf("the bearer token sent as the cookie: %s, want 401", r)
	}
	if r := s.call(bearer(cookie.Value), "GET", "/api/v1/services", nil); r.status != 401 {
		t.Errorf("the cookie's secret sent as a bearer token: %s, want 401", r)
	}

	// A viewer sees lists, never a value, and may not write.
	for _, path := range []string{"/api/v1/credentials", "/api/v1/services", "/api/v1/agents", "/api/v1/operators", "/api/v1/audit", "/api/v1/sessions", "/api/v1/requests", "/api/v1/stores"} {
		r := s.must(bearer(vl.Token), "GET", path, nil, 200, nil)
		mustNotContain(t, "viewer's GET "+path, r.body, credValue)
	}
	viewerWrites := []struct{ method, path string }{
		{"PUT", "/api/v1/credentials/GITHUB_TOKEN"}, {"DELETE", "/api/v1/credentials/GITHUB_TOKEN"},
		{"PUT", "/api/v1/services/x"}, {"POST", "/api/v1/agents"}, {"POST", "/api/v1/sessions"}, {"POST", "/api/v1/operators"},
	}
	for _, wr := range viewerWrites {
		r := s.call(bearer(vl.Token), wr.method, wr.path, map[string]any{"value": "overwritten-by-viewer"})
		if r.status != 403 || !strings.Contains(r.errText(), "viewer") {
			t.Errorf("viewer %s %s: %s, want 403 naming the role", wr.method, wr.path, r)
		}
	}

	// Cookies carry ambient authority: a write with a cookie is refused,
	// from a foreign origin, a cross-site fetch, and from the API's own
	// origin too (the cookie alone can only read and log out); a bearer
	// token is not checked for origin.
	al, alCookie := s.loginWithCookie("adam", "admin-password-0123")
	newAgent := func(name string) apiwire.AgentCreateRequest {
		return apiwire.AgentCreateRequest{Name: name, Services: []string{apiwire.AllServices}}
	}
	for _, h := range []map[string]string{
		{"Origin": "http://evil.example"},
		{"Origin": "null"},
		{"Origin": "http://" + s.apiAddr + ".evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "http://" + s.apiAddr, "Sec-Fetch-Site": "cross-site"},
	} {
		r := s.call(cred{cookie: alCookie, header: h}, "POST", "/api/v1/agents", newAgent("csrf-bot"))
		if r.status != 403 {
			t.Errorf("cookie POST with %v: %s, want 403", h, r)
		}
	}
	if r := s.call(s.admin(), "GET", "/api/v1/agents/csrf-bot", nil); r.status != 404 {
		t.Fatal("a cross-site cookie request created an agent")
	}
	for _, h := range []map[string]string{{"Origin": "http://" + s.apiAddr, "Sec-Fetch-Site": "same-origin"}, nil} {
		r := s.call(cred{cookie: alCookie, header: h}, "POST", "/api/v1/agents", newAgent("cookie-bot"))
		if r.status != 403 || !strings.Contains(r.errText(), "cookie alone cannot change anything") {
			t.Errorf("same-origin cookie POST with %v: %s, want 403 saying a cookie alone changes nothing", h, r)
		}
	}
	s.must(cred{cookie: alCookie}, "GET", "/api/v1/agents", nil, 200, nil)
	s.must(cred{bearer: al.Token, header: map[string]string{"Origin": "http://evil.example"}}, "POST", "/api/v1/agents", newAgent("bearer-bot"), 201, nil)
	// The bearer header wins over the cookie.
	if r := s.call(cred{bearer: vl.Token, cookie: alCookie}, "POST", "/api/v1/agents", newAgent("mixed-bot")); r.status != 403 {
		t.Errorf("viewer bearer + admin cookie: %s, want 403 (the bearer header wins)", r)
	}

	// An admin manages all but operators.
	adminC := bearer(al.Token)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "eve", Password: "a-long-password-0123", Role: "owner"}},
		{"PATCH", "/api/v1/operators/adam", map[string]string{"role": "owner"}},
		{"DELETE", "/api/v1/operators/olga", nil},
	} {
		if r := s.call(adminC, c.method, c.path, c.body); r.status != 403 || !strings.Contains(r.errText(), "owner") {
			t.Errorf("admin %s %s: %s, want 403 saying it needs owner", c.method, c.path, r)
		}
	}
	s.must(adminC, "PUT", "/api/v1/credentials/ADMIN_MADE", map[string]string{"value": "admin-made-value"}, 201, nil)

	// Wrong password and unknown name: the same 401, no oracle.
	wrong := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "adam", Password: "not-the-password-0123"})
	unknown := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "nobody", Password: "not-the-password-0123"})
	if wrong.status != 401 || unknown.status != 401 || wrong.body != unknown.body {
		t.Errorf("wrong password %s vs unknown name %s: want the same 401", wrong, unknown)
	}
	mustNotContain(t, "failed login", wrong.body, "not-the-password-0123")
	for _, body := range []string{`{"name":"adam"}`, `{"name":"adam","password":"admin-password-0123","extra":1}`, `not json`} {
		if r := s.call(cred{}, "POST", "/api/v1/login", body); r.status != 400 && r.status != 401 {
			t.Errorf("login with %s: %s, want 400 or 401", body, r)
		}
	}

	// Logout ends the login for bearer and cookie alike.
	s.must(viaCookie, "POST", "/api/v1/logout", nil, http.StatusNoContent, nil)
	if r := s.call(bearer(vl.Token), "GET", "/api/v1/services", nil); r.status != 401 {
		t.Errorf("the login after logout: %s, want 401", r)
	}
	if r := s.call(viaCookie, "GET", "/api/v1/services", nil); r.status != 401 {
		t.Errorf("the cookie after logout: %s, want 401", r)
	}

	// A new password ends the operator's logins; deletion does too.
	vl2 := s.login("vera", "viewer-password-0123")
	newPw := "viewer-new-password-0123"
	s.must(ownerC, "PATCH", "/api/v1/operators/vera", apiwire.OperatorPatchRequest{Password: &newPw}, 200, nil)
	if r := s.call(bearer(vl2.Token), "GET", "/api/v1/services", nil); r.status != 401 {
		t.Errorf("a login after its operator's password changed: %s, want 401", r)
	}
	if r := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "vera", Password: "viewer-password-0123"}); r.status != 401 {
		t.Errorf("login with the old password: %s, want 401", r)
	}
	vl3 := s.login("vera", newPw)
	role := "admin"
	var patched apiwire.Operator
	s.must(ownerC, "PATCH", "/api/v1/operators/vera", apiwire.OperatorPatchRequest{Role: &role}, 200, &patched)
	if patched.Role != "admin" {
		t.Errorf("PATCH role admin: %+v", patched)
	}
	// A role change takes effect at once (the API reads the database on
	// every request).
	s.must(bearer(vl3.Token), "PUT", "/api/v1/credentials/VERA_MADE", map[string]string{"value": "vera-made-value"}, 201, nil)
	s.must(ownerC, "DELETE", "/api/v1/operators/vera", nil, http.StatusNoContent, nil)
	if r := s.call(bearer(vl3.Token), "GET", "/api/v1/services", nil); r.status != 401 {
		t.Errorf("a login of a deleted operator: %s, want 401", r)
	}
	if r := s.call(ownerC, "DELETE", "/api/v1/operators/vera", nil); r.status != 404 {
		t.Errorf("deleting a deleted operator: %s, want 404", r)
	}
	// The admin token keeps working as owner.
	s.must(s.admin(), "DELETE", "/api/v1/operators/otto", nil, http.StatusNoContent, nil)

	// Passwords are never on disk in plaintext.
	s.stop()
	for _, pw := range []string{"owner-password-0123", "admin-password-0123", "viewer-password-0123", newPw} {
		assertNotOnDisk(t, s.dataDir, pw)
	}
	assertNotOnDisk(t, s.dataDir, al.Token)
}

// retryAfter checks a 429 of the login limiter and returns Retry-After.
func retryAfter(t *testing.T, what string, r apiResult) int {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("%s: %s, want 429", what, r)
	}
	n, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || n <= 0 || n > 300 {
		t.Errorf("%s: Retry-After %q, want seconds in 1..300", what, r.header.Get("Retry-After"))
	}
	mustContain(t, what, r.errText(), "too many failed logins")
	mustContain(t, what, r.errText(), "retry in")
	return n
}

// Five failures for one name from one address lock that name for that
// address, for a while; the right password during the lockout is still
// 429. One address cannot lock the operator out from elsewhere, but
// failures for the name from every address together are bounded too
// (identity.LoginNameTotalFailures, 50).
func TestLoginRateLimitPerName(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	s.createOperator("vera", "viewer-password-0123", "viewer")
	s.createOperator("adam", "admin-password-0123", "admin")
	bad := apiwire.LoginRequest{Name: "vera", Password: "wrong-password-0123"}
	for i := 1; i <= 5; i++ {
		if r := s.call(cred{from: "127.0.0.1"}, "POST", "/api/v1/login", bad); r.status != 401 {
			t.Fatalf("failure %d: %s, want 401", i, r)
		}
	}
	r := s.call(cred{from: "127.0.0.1"}, "POST", "/api/v1/login", bad)
	retryAfter(t, "6th failed login for vera", r)
	// The refusal names neither the name (it may be a password typed in
	// the wrong field) nor the address.
	mustNotContain(t, "429 body", r.body, "vera")
	mustNotContain(t, "429 body", r.body, "127.0.0.1")
	right := apiwire.LoginRequest{Name: "vera", Password: "viewer-password-0123"}
	r = s.call(cred{from: "127.0.0.1"}, "POST", "/api/v1/login", right)
	retryAfter(t, "the right password during the lockout", r)
	mustNotContain(t, "429 body", r.body, "avo_")
	// Another name from the same address is not locked.
	s.must(cred{from: "127.0.0.1"}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "adam", Password: "admin-password-0123"}, 200, nil)
	// vera from elsewhere: not locked out by one address.
	s.must(cred{from: "127.0.0.2"}, "POST", "/api/v1/login", right, 200, nil)

	// Guessing spread over many addresses, 5 each: at most 50 failures
	// for the name in all before even a fresh address gets 429.
	failures, locked := 0, false
	for host := 10; host < 30 && !locked; host++ {
		from := "127.0.0." + strconv.Itoa(host)
		for i := 0; i < 5; i++ {
			r := s.call(cred{from: from}, "POST", "/api/v1/login", bad)
			if r.status == http.StatusTooManyRequests {
				if i == 0 {
					locked = true // a fresh address, refused: the name's total budget
					retryAfter(t, "vera from a fresh address after many failures", r)
				}
				break
			}
			if r.status != 401 {
				t.Fatalf("failure for vera from %s: %s", from, r)
			}
			failures++
		}
	}
	if !locked {
		t.Fatalf("%d failures for vera from 20 addresses and a fresh address is still let through", failures)
	}
	if failures > 55 {
		t.Errorf("%d failures for vera were let through before the name was locked, want at most 50 (+5 from before)", failures)
	}
	t.Logf("vera locked everywhere after %d more failures", failures)
	// Other names are not affected.
	s.must(cred{from: "127.0.0.40"}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "adam", Password: "admin-password-0123"}, 200, nil)
}

// Ten failures from one address lock that address (whatever the names);
// another address is not locked.
func TestLoginRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	s.createOperator("adam", "admin-password-0123", "admin")
	for i := 1; i <= 10; i++ {
		// A different unknown name each time: only the address adds up.
		r := s.call(cred{from: "127.0.0.3"}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "guess" + strconv.Itoa(i), Password: "guessed-password-0123"})
		if r.status != 401 {
			t.Fatalf("failure %d from 127.0.0.3: %s, want 401", i, r)
		}
	}
	right := apiwire.LoginRequest{Name: "adam", Password: "admin-password-0123"}
	retryAfter(t, "the right password from a locked address", s.call(cred{from: "127.0.0.3"}, "POST", "/api/v1/login", right))
	s.must(cred{from: "127.0.0.4"}, "POST", "/api/v1/login", right, 200, nil)
	// The audit trail records the failures, never a password.
	entries, raw := s.auditAll(nil)
	if n := len(findAudit(entries, "login.failed", "")); n < 10 {
		t.Errorf("%d login.failed entries, want >= 10", n)
	}
	mustNotContain(t, "audit", raw, "guessed-password-0123")
	mustNotContain(t, "audit", raw, "admin-password-0123")
	for _, e := range findAudit(entries, "login.failed", "") {
		if e.Client != "127.0.0.3" {
			t.Errorf("login.failed from client %q, want 127.0.0.3", e.Client)
		}
	}
}
