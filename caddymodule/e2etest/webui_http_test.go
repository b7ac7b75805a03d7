package e2etest

// The web UI's rules that need no browser, checked with a plain HTTP
// client against the built server: the Host check (DNS rebinding), the
// signed-out redirect of every page, CSRF on form posts and on
// cookie-authenticated JSON calls, the security headers, and pages that
// load nothing from elsewhere and run no inline script.

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// webUIPages are the page paths of the contract: a signed-out
// GET of any of them redirects to /login.
// (and /ca, the CA download page of webui/doc.go).
var webUIPages = []string{"/", "/credentials", "/services", "/sessions", "/activity", "/agents", "/requests", "/operators", "/audit", "/ca"}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{
	Transport:     &http.Transport{Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// page is one answer of the UI to the plain client.
type page struct {
	status int
	header http.Header
	body   string
}

// uiRequest sends method path to s with the login cookie (if any), the
// Host header host (if set), a form body (if form is non-nil) and the
// headers a browser sends on a same-origin form post.
func (s *server) uiRequest(t *testing.T, method, path, cookie, host string, form url.Values) page {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, "http://"+s.apiAddr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "http://"+s.apiAddr)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: loginCookie, Value: cookie})
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)"`)

// refusedWrite reports whether the UI refused a form post: 403, or the
// POST-redirect-GET back to the page itself with an error flash (the
// API's refusal, shown on the page).
func refusedWrite(p page, path string) bool {
	if p.status == http.StatusForbidden {
		return true
	}
	loc, err := url.Parse(p.header.Get("Location"))
	return p.status == http.StatusSeeOther && err == nil && loc.Path == path && loc.Query().Get("error") != ""
}

// csrfToken is the CSRF token a signed-in page carries in its meta tag.
func csrfToken(t *testing.T, p page) string {
	t.Helper()
	m := csrfMeta.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("page has no <meta name=\"csrf-token\">: %d\n%.2000s", p.status, p.body)
	}
	return m[1]
}

// assertNoSecrets fails t if body holds any of secrets.
func assertNoSecrets(t *testing.T, where, body string, secrets map[string]string) {
	t.Helper()
	for v, what := range secrets {
		if v != "" && strings.Contains(body, v) {
			t.Errorf("%s contains a secret: %s (%.6s...)", where, what, v)
		}
	}
}

// credentialNames lists the credentials through the API (admin token).
func (s *server) credentialNames(t *testing.T) []string {
	t.Helper()
	var l struct {
		Credentials []struct {
			Name string `json:"name"`
		} `json:"credentials"`
	}
	s.must(s.admin(), "GET", "/api/v1/credentials", nil, http.StatusOK, &l)
	var out []string
	for _, c := range l.Credentials {
		out = append(out, c.Name)
	}
	return out
}

// auditCount is the number of audit entries (admin token).
func (s *server) auditCount(t *testing.T) int {
	t.Helper()
	all, _ := s.auditAll(url.Values{"limit": {"1000"}})
	return len(all)
}

func TestWebUIHTTP(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	const ownerPass, viewerPass = "owner pass phrase e2e", "viewer pass phrase e2e"
	s.createOperator("alice", ownerPass, "owner")
	s.createOperator("victor", viewerPass, "viewer")
	ownerLogin, ownerCookie := s.loginWithCookie("alice", ownerPass)
	viewerLogin, viewerCookie := s.loginWithCookie("victor", viewerPass)
	const credValue = "sk_live_webuiHTTPsecret0123456789"
	s.putCredential("EXISTING_TOKEN", credValue)
	secrets := map[string]string{
		s.adminToken():    "the admin token",
		ownerLogin.Token:  "alice's login token",
		ownerCookie:       "alice's login cookie",
		viewerLogin.Token: "victor's login token",
		viewerCookie:      "victor's login cookie",
		credValue:         "a credential value",
		ownerPass:         "alice's password",
		viewerPass:        "victor's password",
		masterPassword:    "the master password",
	}
	_, port, _ := strings.Cut(s.apiAddr, ":")

	t.Run("host check", func(t *testing.T) {
		for _, host := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.evil.example:" + port, "localhost.evil.example"} {
			for _, path := range []string{"/healthz", "/api/v1/credentials", "/login", "/"} {
				p := s.uiRequest(t, "GET", path, ownerCookie, host, nil)
				if p.status != http.StatusMisdirectedRequest {
					t.Errorf("GET %s with Host %s: %d, want 421", path, host, p.status)
				}
				if path == "/healthz" && !strings.Contains(p.body, "allowed_hosts") {
					t.Errorf("421 body does not say to add the name to allowed_hosts: %s", p.body)
				}
				assertNoSecrets(t, "421 answer", p.body, secrets)
			}
			// The check runs before authentication: even the admin
			// token gets 421, and nothing it asks for happens.
			req, _ := http.NewRequest("PUT", "http://"+s.apiAddr+"/api/v1/credentials/REBOUND", strings.NewReader(`{"value":"x"}`))
			req.Host = host
			req.Header.Set("Authorization", "Bearer "+s.adminToken())
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMisdirectedRequest {
				t.Errorf("PUT with the admin token and Host %s: %d, want 421", host, resp.StatusCode)
			}
		}
		if slices.Contains(s.credentialNames(t), "REBOUND") {
			t.Error("a request refused by the Host check wrote a credential")
		}
		for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "localhost", "ui.localhost:" + port, "[::1]:" + port} {
			if p := s.uiRequest(t, "GET", "/healthz", "", host, nil); p.status != http.StatusOK {
				t.Errorf("GET /healthz with Host %s: %d, want 200", host, p.status)
			}
			if p := s.uiRequest(t, "GET", "/login", "", host, nil); p.status != http.StatusOK {
				t.Errorf("GET /login with Host %s: %d, want 200", host, p.status)
			}
			if p := s.uiRequest(t, "GET", "/credentials", ownerCookie, host, nil); p.status != http.StatusOK {
				t.Errorf("GET /credentials signed in with Host %s: %d, want 200", host, p.status)
			}
		}
	})

	t.Run("signed-out redirect", func(t *testing.T) {
		for _, path := range webUIPages {
			for what, cookie := range map[string]string{"no cookie": "", "a malformed cookie": "not-a-login-cookie-value", "an unknown cookie": viewerCookie + "x"} {
				p := s.uiRequest(t, "GET", path, cookie, "", nil)
				loc, err := url.Parse(p.header.Get("Location"))
				next := loc.Query().Get("next")
				if path == "/" && next == "" {
					next = "/" // the default after signing in
				}
				if p.status != http.StatusSeeOther || err != nil || loc.Host != "" || loc.Path != "/login" || next != path {
					t.Errorf("signed-out GET %s (%s): %d Location %q, want 303 /login?next=%s", path, what, p.status, p.header.Get("Location"), path)
				}
			}
		}
		// The login page itself answers, and a next that is not a
		// local path is never echoed as a link elsewhere.
		p := s.uiRequest(t, "GET", "/login?next="+url.QueryEscape("//evil.example/x"), "", "", nil)
		if p.status != http.StatusOK {
			t.Fatalf("GET /login: %d", p.status)
		}
		mustNotContain(t, "login page with a foreign next", p.body, "evil.example")
		// Signed in, the pages answer 200.
		for _, path := range webUIPages {
			if p := s.uiRequest(t, "GET", path, ownerCookie, "", nil); p.status != http.StatusOK {
				t.Errorf("signed-in GET %s: %d, want 200\n%.500s", path, p.status, p.body)
			}
		}
	})

	t.Run("headers and no foreign content", func(t *testing.T) {
		pages := map[string]page{"/login (signed out)": s.uiRequest(t, "GET", "/login", "", "", nil)}
		for _, path := range webUIPages {
			pages[path] = s.uiRequest(t, "GET", path, ownerCookie, "", nil)
		}
		assets := map[string]bool{}
		for where, p := range pages {
			checkUIHeaders(t, where, p.header)
			checkNoInlineOrForeign(t, where, p.body)
			assertNoSecrets(t, where, p.body, secrets)
			for _, m := range assetRef.FindAllStringSubmatch(p.body, -1) {
				assets[m[1]] = true
			}
		}
		if len(assets) == 0 {
			t.Error("the pages load no /static/ script or style sheet")
		}
		for a := range assets {
			p := s.uiRequest(t, "GET", a, "", "", nil)
			if p.status != http.StatusOK || p.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s: %d nosniff=%q", a, p.status, p.header.Get("X-Content-Type-Options"))
			}
			ct := p.header.Get("Content-Type")
			if strings.HasSuffix(a, ".js") && !strings.HasPrefix(ct, "text/javascript") && !strings.HasPrefix(ct, "application/javascript") ||
				strings.HasSuffix(a, ".css") && !strings.HasPrefix(ct, "text/css") {
				t.Errorf("GET %s: Content-Type %q", a, ct)
			}
			if foreignURL.MatchString(p.body) {
				t.Errorf("%s refers to a URL elsewhere: %q", a, foreignURL.FindString(p.body))
			}
		}
	})

	// What Chromium sends on a same-origin form post from a page with
	// Referrer-Policy: no-referrer (the UI's): Origin "null" (the Fetch
	// standard's serialization under that policy) and Sec-Fetch-Site
	// same-origin. Such a sign-in and such a write must pass; the same
	// Origin with a cross-site Sec-Fetch-Site, or with none, must not.
	t.Run("form posts as chromium sends them", func(t *testing.T) {
		post := func(path, cookie, site string, form url.Values) page {
			t.Helper()
			req, _ := http.NewRequest("POST", "http://"+s.apiAddr+path, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", "null")
			if site != "" {
				req.Header.Set("Sec-Fetch-Site", site)
			}
			if cookie != "" {
				req.AddCookie(&http.Cookie{Name: loginCookie, Value: cookie})
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return page{status: resp.StatusCode, header: resp.Header, body: string(b)}
		}
		signIn := url.Values{"name": {"alice"}, "password": {ownerPass}, "next": {"/credentials"}}
		if p := post("/login", "", "same-origin", signIn); p.status != http.StatusSeeOther || p.header.Get("Location") != "/credentials" {
			t.Errorf("sign-in with Origin null, Sec-Fetch-Site same-origin: %d Location %q, want 303 /credentials\n%.300s", p.status, p.header.Get("Location"), p.body)
		}
		for _, site := range []string{"cross-site", "same-site", ""} {
			if p := post("/login", "", site, signIn); p.status == http.StatusSeeOther {
				t.Errorf("sign-in with Origin null, Sec-Fetch-Site %q: 303, want a refusal", site)
			}
		}
		token := csrfToken(t, s.uiRequest(t, "GET", "/credentials", ownerCookie, "", nil))
		put := url.Values{"action": {"put"}, "name": {"NULL_ORIGIN_OK"}, "value": {"null-origin-0123456789"}, "csrf": {token}}
		if p := post("/credentials", ownerCookie, "same-origin", put); !strings.Contains(p.header.Get("Location"), "ok=") {
			t.Errorf("a form write with Origin null, Sec-Fetch-Site same-origin: %d Location %q, want 303 back with ok", p.status, p.header.Get("Location"))
		}
		put.Set("name", "NULL_ORIGIN_CROSS")
		if p := post("/credentials", ownerCookie, "cross-site", put); !refusedWrite(p, "/credentials") {
			t.Errorf("a form write with Origin null, Sec-Fetch-Site cross-site: %d Location %q, want refused", p.status, p.header.Get("Location"))
		}
		names := s.credentialNames(t)
		if !slices.Contains(names, "NULL_ORIGIN_OK") || slices.Contains(names, "NULL_ORIGIN_CROSS") {
			t.Errorf("credentials after the null-origin writes: %v", names)
		}
	})

	t.Run("login cookie", func(t *testing.T) {
		r := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: ownerPass})
		var sc string
		for _, v := range r.header.Values("Set-Cookie") {
			if strings.HasPrefix(v, loginCookie+"=") {
				sc = v
			}
		}
		for _, attr := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
			if !strings.Contains(sc, attr) {
				t.Errorf("login Set-Cookie %q lacks %s", redactCookie(sc), attr)
			}
		}
	})

	t.Run("csrf", func(t *testing.T) {
		token := csrfToken(t, s.uiRequest(t, "GET", "/credentials", ownerCookie, "", nil))
		otherToken := csrfToken(t, s.uiRequest(t, "GET", "/credentials", viewerCookie, "", nil))
		if token == otherToken {
			t.Fatal("two logins' pages carry the same CSRF token")
		}
		// The forms of a signed-in page carry the token as a hidden field.
		if p := s.uiRequest(t, "GET", "/credentials", ownerCookie, "", nil); !strings.Contains(p.body, `name="csrf" value="`+token+`"`) {
			t.Errorf("the credentials page's forms carry no hidden csrf field with the page's token")
		}
		auditBefore := s.auditCount(t)
		create := func(name, csrf string, omit bool) url.Values {
			f := url.Values{"action": {"put"}, "name": {name}, "value": {"csrf-test-value-0123456789"}}
			if !omit {
				f.Set("csrf", csrf)
			}
			return f
		}
		for _, c := range []struct {
			what string
			form url.Values
		}{
			{"no csrf field", create("CSRF_NONE", "", true)},
			{"an empty csrf", create("CSRF_EMPTY", "", false)},
			{"a wrong csrf", create("CSRF_WRONG", token[:len(token)-2]+"xx", false)},
			{"another login's csrf", create("CSRF_OTHER", otherToken, false)},
		} {
			p := s.uiRequest(t, "POST", "/credentials", ownerCookie, "", c.form)
			if p.status != http.StatusForbidden {
				t.Errorf("form POST /credentials with %s: %d, want 403", c.what, p.status)
			}
			assertNoSecrets(t, "403 page", p.body, secrets)
		}
		// Every page's form path refuses a post without the token, before
		// the API is called (whatever the action).
		for _, path := range append(slices.Clone(webUIPages[1:]), "/logout") {
			p := s.uiRequest(t, "POST", path, ownerCookie, "", url.Values{"action": {"delete"}, "name": {"EXISTING_TOKEN"}, "id": {"x"}})
			if p.status != http.StatusForbidden {
				t.Errorf("form POST %s without csrf: %d, want 403", path, p.status)
			}
		}
		// Cookie-authenticated JSON calls need the X-CSRF-Token header.
		for _, hdr := range []map[string]string{nil, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": otherToken}} {
			r := s.call(cred{cookie: ownerCookie, header: hdr}, "PUT", "/api/v1/credentials/CSRF_JSON", map[string]string{"value": "v-0123456789"})
			if r.status != http.StatusForbidden {
				t.Errorf("cookie PUT without a valid X-CSRF-Token (%v): %s, want 403", hdr, r)
			}
		}
		if got := s.auditCount(t); got != auditBefore {
			t.Errorf("refused posts changed the audit trail: %d -> %d entries", auditBefore, got)
		}
		names := s.credentialNames(t)
		for _, n := range []string{"CSRF_NONE", "CSRF_EMPTY", "CSRF_WRONG", "CSRF_OTHER", "CSRF_JSON"} {
			if slices.Contains(names, n) {
				t.Errorf("a refused post created credential %s", n)
			}
		}
		if !slices.Contains(names, "EXISTING_TOKEN") {
			t.Error("a refused delete removed EXISTING_TOKEN")
		}
		// With the token, the same post is accepted (so the 403s above
		// were the CSRF check, not a malformed form).
		p := s.uiRequest(t, "POST", "/credentials", ownerCookie, "", create("CSRF_OK", token, false))
		if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/credentials") {
			t.Errorf("form POST /credentials with the token: %d Location %q, want 303 to /credentials\n%.1000s", p.status, p.header.Get("Location"), p.body)
		}
		r := s.call(cred{cookie: ownerCookie, header: map[string]string{"X-CSRF-Token": token, "Origin": "http://" + s.apiAddr}}, "PUT", "/api/v1/credentials/CSRF_JSON_OK", map[string]string{"value": "v-0123456789"})
		if r.status != http.StatusOK && r.status != http.StatusCreated {
			t.Errorf("cookie PUT with the X-CSRF-Token: %s, want 200/201", r)
		}
		names = s.credentialNames(t)
		for _, n := range []string{"CSRF_OK", "CSRF_JSON_OK"} {
			if !slices.Contains(names, n) {
				t.Errorf("the post with the token did not create %s", n)
			}
		}
	})

	t.Run("viewer forged post", func(t *testing.T) {
		token := csrfToken(t, s.uiRequest(t, "GET", "/credentials", viewerCookie, "", nil))
		auditBefore := s.auditCount(t)
		for _, f := range []url.Values{
			{"action": {"put"}, "name": {"VIEWER_FORGED"}, "value": {"forged-value-0123456789"}},
			{"action": {"put"}, "name": {"VIEWER_FORGED"}, "value": {"forged-value-0123456789"}, "csrf": {token}},
			{"action": {"delete"}, "name": {"EXISTING_TOKEN"}, "csrf": {token}},
		} {
			p := s.uiRequest(t, "POST", "/credentials", viewerCookie, "", f)
			if !refusedWrite(p, "/credentials") {
				t.Errorf("viewer's form POST /credentials %v: %d Location %q, want 403 or 303 back with an error", f.Get("action"), p.status, p.header.Get("Location"))
			}
			if f.Get("csrf") == "" && p.status != http.StatusForbidden {
				t.Errorf("viewer's form POST /credentials without csrf: %d, want 403 (the CSRF check comes first)", p.status)
			}
			assertNoSecrets(t, "viewer's 403 page", p.body, secrets)
		}
		p := s.uiRequest(t, "POST", "/services", viewerCookie, "", url.Values{"action": {"put"}, "name": {"viewer-svc"}, "host": {"api.viewer.test"}, "auth_type": {"passthrough"}, "csrf": {token}})
		if !refusedWrite(p, "/services") {
			t.Errorf("viewer's form POST /services: %d Location %q, want 403 or 303 back with an error", p.status, p.header.Get("Location"))
		}
		r := s.call(cred{cookie: viewerCookie, header: map[string]string{"X-CSRF-Token": token}}, "PUT", "/api/v1/credentials/VIEWER_JSON", map[string]string{"value": "v-0123456789"})
		if r.status != http.StatusForbidden {
			t.Errorf("viewer's cookie PUT with the CSRF header: %s, want 403", r)
		}
		if got := s.auditCount(t); got != auditBefore {
			t.Errorf("the viewer's refused posts changed the audit trail: %d -> %d entries", auditBefore, got)
		}
		names := s.credentialNames(t)
		if slices.Contains(names, "VIEWER_FORGED") || slices.Contains(names, "VIEWER_JSON") || !slices.Contains(names, "EXISTING_TOKEN") {
			t.Errorf("the viewer's refused posts changed the credentials: %v", names)
		}
		svcs := s.must(s.admin(), "GET", "/api/v1/services", nil, http.StatusOK, nil)
		mustNotContain(t, "services after the viewer's post", svcs.body, "viewer-svc")
	})
}

// checkUIHeaders asserts the security headers every UI page carries.
func checkUIHeaders(t *testing.T, where string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("%s: CSP %q lacks %s", where, csp, d)
		}
	}
	for _, bad := range []string{"'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:"} {
		if strings.Contains(csp, bad) {
			t.Errorf("%s: CSP %q allows %s", where, csp, bad)
		}
	}
	for k, want := range map[string]string{
		"X-Frame-Options":        "DENY",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s = %q, want %q", where, k, got, want)
		}
	}
	if cc := h.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("%s: Cache-Control %q, want no-store", where, cc)
	}
}

var (
	// assetRef finds the page's own scripts and style sheets.
	assetRef = regexp.MustCompile(`(?:src|href)="(/static/[^"?#]+)`)
	// inlineScript is a <script> element without src.
	inlineScript = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>`)
	// handlerAttr is an inline event handler or style attribute, which the
	// CSP would block (and so must not be relied on).
	handlerAttr = regexp.MustCompile(`(?i)\s(?:on[a-z]+|style)\s*=`)
	// srcAttr is any attribute that loads or links a URL.
	srcAttr = regexp.MustCompile(`(?i)\s(?:src|href|action|formaction)="([^"]*)"`)
	// foreignURL is a URL of another site (loopback names excepted: the
	// av-launch snippet names this server's own address).
	foreignURL = regexp.MustCompile(`(?i)(?:https?:)?//(?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*\.[a-z]{2,}[/:"']`)
)

// checkNoInlineOrForeign asserts a page runs no inline script, has no
// inline handler or style, and loads and links nothing off the server.
func checkNoInlineOrForeign(t *testing.T, where, body string) {
	t.Helper()
	for _, tag := range inlineScript.FindAllString(body, -1) {
		if !strings.Contains(tag, ` src="/`) {
			t.Errorf("%s: inline script %q", where, tag)
		}
	}
	if m := handlerAttr.FindString(body); m != "" {
		t.Errorf("%s: inline handler or style attribute %q", where, m)
	}
	for _, m := range srcAttr.FindAllStringSubmatch(body, -1) {
		u := m[1]
		if u == "" || strings.HasPrefix(u, "#") || strings.HasPrefix(u, "?") || strings.HasPrefix(u, "/") && !strings.HasPrefix(u, "//") {
			continue
		}
		t.Errorf("%s: %s refers off the server", where, strings.TrimSpace(m[0]))
	}
}

// redactCookie shows a Set-Cookie line without its value.
func redactCookie(sc string) string {
	if _, attrs, ok := strings.Cut(sc, ";"); ok {
		return loginCookie + "=<redacted>;" + attrs
	}
	return "<none>"
}

// A name listed in agent_vault_api { allowed_hosts ... } (in
// Caddyfile.example, from AGENT_VAULT_ALLOWED_HOSTS) is answered; any
// other name still gets 421.
func TestWebUIAllowedHosts(t *testing.T) {
	s := startServer(t, newTestCA(t), serverOpts{extraEnv: []string{"AGENT_VAULT_ALLOWED_HOSTS=broker.example.com"}})
	_, port, _ := strings.Cut(s.apiAddr, ":")
	for host, want := range map[string]int{
		"broker.example.com:" + port: http.StatusOK,
		"BROKER.example.com":         http.StatusOK,
		"evil.example.com:" + port:   http.StatusMisdirectedRequest,
		"example.com":                http.StatusMisdirectedRequest,
		"127.0.0.1:" + port:          http.StatusOK,
	} {
		if p := s.uiRequest(t, "GET", "/healthz", "", host, nil); p.status != want {
			t.Errorf("GET /healthz with Host %s: %d, want %d", host, p.status, want)
		}
	}
}
