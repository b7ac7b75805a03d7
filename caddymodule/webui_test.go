package caddymodule

// The web UI, in-process: its security rules (signed-out redirect,
// CSRF, headers, Host check), each page for an admin and a viewer,
// escaping, and that no page ever holds a credential value.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// uiPages are every page path of the contract (and /ca).
var uiPages = []string{"/", "/credentials", "/services", "/sessions", "/activity", "/agents", "/requests", "/operators", "/audit", "/ca"}

// browser is a signed-in (or not) browser of the UI: it keeps the
// login cookie, sends Origin like a browser's form post, and does not
// follow redirects.
type browser struct {
	t      *testing.T
	pl     *pipeline
	cookie string
}

type page struct {
	status int
	header http.Header
	body   string
}

// do sends one request as the browser; form non-nil is POSTed.
func (b *browser) do(method, path string, form url.Values, headers ...string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.pl.apiURL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		// As Chromium posts a form of a page whose Referrer-Policy
		// is no-referrer (the UI's): Origin null, Sec-Fetch-Site
		// same-origin.
		req.Header.Set("Origin", "null")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if b.cookie != "" {
		req.AddCookie(&http.Cookie{Name: identity.CookieName, Value: b.cookie})
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	for _, c := range resp.Cookies() {
		if c.Name == identity.CookieName {
			b.cookie = c.Value
			if c.MaxAge < 0 {
				b.cookie = ""
			}
		}
	}
	return page{resp.StatusCode, resp.Header, string(data)}
}

func (b *browser) get(path string) page { b.t.Helper(); return b.do("GET", path, nil) }

// post posts a page's form with the browser's CSRF token.
func (b *browser) post(path string, fields ...string) page {
	b.t.Helper()
	form := url.Values{"csrf": {identity.CSRFToken(b.cookie)}}
	for i := 0; i+1 < len(fields); i += 2 {
		form.Set(fields[i], fields[i+1])
	}
	return b.do("POST", path, form)
}

// signIn signs in through the login page.
func uiSignIn(t *testing.T, pl *pipeline, fields ...string) *browser {
	t.Helper()
	b := &browser{t: t, pl: pl}
	form := url.Values{"next": {"/"}}
	for i := 0; i+1 < len(fields); i += 2 {
		form.Set(fields[i], fields[i+1])
	}
	p := b.do("POST", "/login", form)
	if p.status != http.StatusSeeOther || b.cookie == "" {
		t.Fatalf("sign in: %d %s", p.status, p.body)
	}
	return b
}

// wantFlash checks that a write redirected back to path with a flash
// of kind ("ok" or "error") saying want.
func wantFlash(t *testing.T, p page, path, kind, want string) {
	t.Helper()
	loc, _ := url.Parse(p.header.Get("Location"))
	if p.status != http.StatusSeeOther || loc == nil || loc.Path != path || !strings.Contains(loc.Query().Get(kind), want) {
		t.Fatalf("want a 303 to %s with %s %q, got %d %s %s", path, kind, want, p.status, p.header.Get("Location"), p.body)
	}
}

func TestWebUISignedOutRedirect(t *testing.T) {
	pl, _ := identityPipeline(t)
	b := &browser{t: t, pl: pl}
	for _, path := range uiPages {
		p := b.get(path)
		want := "/login?next=" + url.QueryEscape(path)
		if path == "/" {
			want = "/login"
		}
		if p.status != http.StatusSeeOther || p.header.Get("Location") != want {
			t.Errorf("signed-out GET %s: %d Location %q, want 303 %s", path, p.status, p.header.Get("Location"), want)
		}
	}
	// A stale or planted cookie is signed out too.
	b.cookie = "avc_" + strings.Repeat("A", 43)
	if p := b.get("/services"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/login") {
		t.Errorf("unknown cookie: %d %s", p.status, p.header.Get("Location"))
	}
	// The login page is served, and its next is a local path only.
	b.cookie = ""
	p := b.get("/login?next=//evil.example/x")
	if p.status != 200 || strings.Contains(p.body, "evil.example") || !strings.Contains(p.body, `id="login-form"`) {
		t.Fatalf("login page: %d %s", p.status, p.body)
	}
	// The API's own paths keep answering JSON.
	if p := b.get("/api/v1/services"); p.status != 401 || !strings.Contains(p.header.Get("Content-Type"), "json") {
		t.Fatalf("API: %d %s", p.status, p.header.Get("Content-Type"))
	}
	if p := b.get("/nope"); p.status != 404 {
		t.Fatalf("unknown page: %d", p.status)
	}
}

func TestWebUIHeaders(t *testing.T) {
	pl, _ := identityPipeline(t)
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	for _, path := range []string{"/login", "/", "/services", "/static/app.js", "/static/app.css"} {
		p := b.get(path)
		if p.status != 200 {
			t.Errorf("%s: %d", path, p.status)
			continue
		}
		h := p.header
		if h.Get("Content-Security-Policy") != "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" ||
			h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", path, h)
		}
		if !strings.HasPrefix(path, "/static/") && h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", path, h.Get("Cache-Control"))
		}
	}
	// No inline script or style, no external URL, on any page.
	for _, path := range uiPages {
		body := b.get(path).body
		for _, bad := range []*regexp.Regexp{regexp.MustCompile(`<script>|<script [^>]*>[^<]`), regexp.MustCompile(`<style`), regexp.MustCompile(` style=`), regexp.MustCompile(` on[a-z]+=`), regexp.MustCompile(`(src|href|action)="(https?:)?//`)} {
			if loc := bad.FindStringIndex(body); loc != nil {
				t.Errorf("%s: %q in the page", path, body[loc[0]:min(len(body), loc[1]+40)])
			}
		}
	}
}

func TestWebUIHostCheck(t *testing.T) {
	pl, _ := identityPipeline(t)
	b := &browser{t: t, pl: pl}
	port := pl.apiURL[strings.LastIndex(pl.apiURL, ":")+1:]
	for host, want := range map[string]int{"evil.example": 421, "evil.example:" + port: 421, "127.0.0.1:" + port: 303, "localhost:" + port: 303, "ui.localhost": 303} {
		for _, path := range []string{"/services", "/api/v1/whoami"} {
			p := b.do("GET", path, nil, "Host", host)
			w := want
			if want == 303 && path != "/services" {
				w = 401
			}
			if p.status != w {
				t.Errorf("Host %s GET %s: %d, want %d", host, path, p.status, w)
			}
			if w == 421 && !strings.Contains(p.body, "allowed_hosts") {
				t.Errorf("Host %s: %s", host, p.body)
			}
		}
	}
}

func TestWebUICSRF(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "admin")
	b := uiSignIn(t, pl, "name", "alice", "password", testPassword)
	good := identity.CSRFToken(b.cookie)
	other, _, _ := identity.NewToken(identity.KindLoginCookie)
	for what, form := range map[string]url.Values{
		"no csrf":    {"action": {"put"}, "name": {"NEW_CRED"}, "value": {"v-123456"}},
		"empty":      {"action": {"put"}, "name": {"NEW_CRED"}, "value": {"v-123456"}, "csrf": {""}},
		"wrong":      {"action": {"put"}, "name": {"NEW_CRED"}, "value": {"v-123456"}, "csrf": {identity.CSRFToken(other)}},
		"the cookie": {"action": {"put"}, "name": {"NEW_CRED"}, "value": {"v-123456"}, "csrf": {b.cookie}},
		"twice":      {"action": {"put"}, "name": {"NEW_CRED"}, "value": {"v-123456"}, "csrf": {good, good}},
	} {
		for _, path := range uiPages {
			if p := b.do("POST", path, form); p.status != http.StatusForbidden {
				t.Errorf("%s POST %s: %d, want 403", what, path, p.status)
			}
		}
		if p := b.do("POST", "/logout", form); p.status != http.StatusForbidden {
			t.Errorf("%s POST /logout: %d", what, p.status)
		}
	}
	var creds apiwire.CredentialList
	pl.must(t, pl.admin(), "GET", "/api/v1/credentials", nil, 200, &creds)
	for _, c := range creds.Credentials {
		if c.Name == "NEW_CRED" {
			t.Fatal("a post without a valid CSRF token wrote a credential")
		}
	}
	// Signed out, a post is 403 too (no token can be valid).
	anon := &browser{t: t, pl: pl}
	if p := anon.do("POST", "/credentials", url.Values{"action": {"put"}, "csrf": {good}}); p.status != 403 {
		t.Errorf("signed-out post: %d", p.status)
	}
	// The right token writes.
	wantFlash(t, b.post("/credentials", "action", "put", "name", "NEW_CRED", "value", "v-123456"), "/credentials", "ok", "NEW_CRED")
	// A sign-in without a browser's same-origin proof is refused; one
	// from another origin is refused by the API.
	if p := anon.do("POST", "/login", url.Values{"name": {"alice"}, "password": {testPassword}}, "Origin", "", "Sec-Fetch-Site", ""); p.status != 403 || anon.cookie != "" {
		t.Errorf("sign-in without Origin: %d", p.status)
	}
	for _, h := range [][]string{{"Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"}, {"Origin", "null", "Sec-Fetch-Site", "cross-site"}, {"Origin", "null", "Sec-Fetch-Site", ""}} {
		if p := anon.do("POST", "/login", url.Values{"name": {"alice"}, "password": {testPassword}}, h...); p.status == 303 || anon.cookie != "" {
			t.Errorf("sign-in with %q: %d", h, p.status)
		}
	}
	// A write whose browser says it came from elsewhere is refused by
	// the API even with the token (the token alone is not enough).
	wantFlash(t, b.do("POST", "/credentials", url.Values{"csrf": {good}, "action": {"put"}, "name": {"CROSS"}, "value": {"v-1"}}, "Sec-Fetch-Site", "cross-site"), "/credentials", "error", "cross-origin")
}

// TestCookieCSRFHeaderAPI: the JSON API takes a cookie-authenticated
// change with the CSRF header (and refuses it without, as before).
func TestCookieCSRFHeaderAPI(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "admin")
	cookie := loginCookieOf(t, pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: testPassword})).Value
	svc := services.Service{Host: "c.example", Auth: services.Auth{Type: services.AuthPassthrough}}
	wantAPIError(t, "no header", pl.call(t, apiCall{cookie: cookie}, "PUT", "/api/v1/services/c", svc), 403, "login cookie alone")
	wantAPIError(t, "wrong header", pl.call(t, apiCall{cookie: cookie, headers: []string{"X-CSRF-Token", identity.CSRFToken("x")}}, "PUT", "/api/v1/services/c", svc), 403, "login cookie alone")
	wantAPIError(t, "cross-site", pl.call(t, apiCall{cookie: cookie, headers: []string{"X-CSRF-Token", identity.CSRFToken(cookie), "Sec-Fetch-Site", "cross-site"}}, "PUT", "/api/v1/services/c", svc), 403)
	pl.must(t, apiCall{cookie: cookie, headers: []string{"X-CSRF-Token", identity.CSRFToken(cookie), "Origin", pl.apiURL}}, "PUT", "/api/v1/services/c", svc, 200, nil)
	if !hasService(t, pl, "c") {
		t.Fatal("not created")
	}
}

func TestWebUIAdminTokenSignIn(t *testing.T) {
	pl, _ := identityPipeline(t)
	anon := &browser{t: t, pl: pl}
	p := anon.do("POST", "/login", url.Values{"admin_token": {"not-the-token-" + strings.Repeat("x", 20)}})
	if p.status != 401 || anon.cookie != "" || !strings.Contains(p.body, `id="flash"`) {
		t.Fatalf("wrong admin token: %d %s", p.status, p.body)
	}
	b := uiSignIn(t, pl, "admin_token", pl.adminToken, "next", "/operators")
	var me apiwire.Whoami
	pl.must(t, apiCall{cookie: b.cookie}, "GET", "/api/v1/whoami", nil, 200, &me)
	if me.Role != "owner" || me.Kind != apiwire.ActorAdminToken {
		t.Fatalf("whoami: %+v", me)
	}
	op := b.get("/operators")
	if op.status != 200 || !strings.Contains(op.body, `id="operator-form"`) || !strings.Contains(op.body, `id="nav-operators"`) {
		t.Fatalf("operators page as admin token: %d", op.status)
	}
	text := auditText(pl.auditEntries(t, url.Values{"action": {"login"}}))
	if !strings.Contains(text, "admin-token") {
		t.Fatalf("audit: %s", text)
	}
	if !strings.Contains(auditText(pl.auditEntries(t, url.Values{"action": {"login.failed"}})), "admin-token") {
		t.Fatal("a failed admin token sign-in is not audited")
	}
	// The JSON API takes the admin token alone only.
	wantAPIError(t, "admin token and name", pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "x", AdminToken: pl.adminToken}), 400)
	// Sign out ends that login.
	old := b.cookie
	if p := b.post("/logout"); p.status != 303 || b.cookie != "" {
		t.Fatalf("sign out: %d %v", p.status, p.header)
	}
	wantAPIError(t, "cookie after sign out", pl.call(t, apiCall{cookie: old}, "GET", "/api/v1/whoami", nil), 401)
}

// TestWebUIPages: an admin uses every page; a viewer sees them all
// without one edit control, and a forged post shows the API's 403 and
// changes nothing.
func TestWebUIPages(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "admin")
	pl.createOperator(t, "vera", testPassword, "viewer")
	admin := uiSignIn(t, pl, "name", "alice", "password", testPassword)
	for _, path := range uiPages {
		p := admin.get(path)
		want := 200
		if p.status != want || !strings.Contains(p.body, `<nav id="nav">`) {
			t.Errorf("admin GET %s: %d", path, p.status)
		}
	}
	if strings.Contains(admin.get("/").body, "nav-operators") {
		t.Error("an admin sees the operators nav item")
	}
	// Credentials.
	wantFlash(t, admin.post("/credentials", "action", "put", "name", "OPENAI_API_KEY", "value", "sk-abc"), "/credentials", "ok", "saved")
	if !strings.Contains(admin.get("/credentials").body, `data-name="OPENAI_API_KEY"`) {
		t.Error("credential not listed")
	}
	// Services, from a template, and the URL tester.
	tp := admin.get("/services?template=github")
	if !strings.Contains(tp.body, `value="api.github.com"`) || !strings.Contains(tp.body, `value="GITHUB_TOKEN"`) {
		t.Error("the github template does not fill the form")
	}
	wantFlash(t, admin.post("/services", "action", "put", "name", "openai", "host", "api.openai.com", "auth_type", "bearer", "token", "OPENAI_API_KEY", "key", "ignored"), "/services", "ok", "saved")
	wantFlash(t, admin.post("/services", "action", "put", "name", "hdr", "host", "h.example", "auth_type", "custom", "headers", "Authorization: Bearer {{ OPENAI_API_KEY }}"), "/services", "ok", "saved")
	m := admin.post("/services", "action", "match", "url", "https://api.openai.com/v1/models?key=secret")
	if !strings.Contains(m.body, `id="match-result"`) || !strings.Contains(m.body, "<b>openai</b>") {
		t.Errorf("URL tester: %s", m.body)
	}
	if m := admin.post("/services", "action", "match", "url", "https://nothing.example/"); !strings.Contains(m.body, "No service") {
		t.Error("URL tester: no match not said")
	}
	if !strings.Contains(admin.get("/services?edit=openai").body, "Edit service openai") {
		t.Error("edit form")
	}
	wantFlash(t, admin.post("/services", "action", "put", "name", "bad", "host", "", "auth_type", "bearer"), "/services", "error", "")
	wantFlash(t, admin.post("/services", "action", "delete", "name", "hdr"), "/services", "ok", "deleted")
	// Agents: the token is shown once, on the answer.
	p := admin.post("/agents", "action", "create", "name", "ci-bot", "services", "openai, github", "max_session_ttl", "1h")
	tok := regexp.MustCompile(`<pre id="agent-token">([^<]+)</pre>`).FindStringSubmatch(p.body)
	if p.status != 200 || tok == nil || !strings.HasPrefix(tok[1], "avt_") {
		t.Fatalf("agent create: %d %s", p.status, p.body)
	}
	if strings.Contains(admin.get("/agents").body, tok[1]) {
		t.Fatal("the agent token is shown again")
	}
	wantFlash(t, admin.post("/agents", "action", "update", "name", "ci-bot", "services", "openai", "max_session_ttl", "30m"), "/agents", "ok", "updated")
	// Sessions: mint one as the agent, revoke it in the UI.
	sess := pl.mint(t, asToken(tok[1]), apiwire.SessionRequest{TTL: "10m"})
	if !strings.Contains(admin.get("/sessions").body, `data-id="`+sess.ID+`" data-state="active"`) {
		t.Fatal("session not listed as active")
	}
	// Access requests: approve and deny.
	var r1, r2 apiwire.AccessRequest
	pl.must(t, asToken(tok[1]), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "github", Reason: "<script>alert(1)</script>"}, 201, &r1)
	pl.must(t, asToken(tok[1]), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, 201, &r2)
	rp := admin.get("/requests")
	if strings.Contains(rp.body, "<script>alert") || !strings.Contains(rp.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatal("the request's reason is not escaped")
	}
	// Viewer: every page, no edit control; forged posts refused by the API.
	viewer := uiSignIn(t, pl, "name", "vera", "password", testPassword)
	for _, path := range uiPages {
		vp := viewer.get(path)
		if vp.status != 200 {
			t.Errorf("viewer GET %s: %d", path, vp.status)
			continue
		}
		// Only sign-out, and the URL tester (it changes nothing).
		forms := regexp.MustCompile(`<form [^>]*method="post"`).FindAllString(vp.body, -1)
		forms = slices.DeleteFunc(forms, func(f string) bool { return strings.Contains(f, `id="match-form"`) })
		if len(forms) != 1 || !strings.Contains(vp.body, `id="logout-form"`) {
			t.Errorf("viewer GET %s: post forms %q", path, forms)
		}
		if !strings.Contains(vp.body, `data-role="viewer"`) {
			t.Errorf("viewer GET %s: no data-role", path)
		}
	}
	for _, forged := range [][]string{
		{"/credentials", "action", "delete", "name", "OPENAI_API_KEY"},
		{"/services", "action", "delete", "name", "openai"},
		{"/sessions", "action", "revoke", "id", sess.ID},
		{"/agents", "action", "delete", "name", "ci-bot"},
		{"/requests", "action", "approve", "id", r1.ID},
		{"/operators", "action", "delete", "name", "alice"},
	} {
		wantFlash(t, viewer.post(forged[0], forged[1:]...), forged[0], "error", "role viewer may not")
	}
	if !hasService(t, pl, "openai") || pl.sessionStatus(t, sess.ID) != apiwire.SessionActive {
		t.Fatal("a viewer's forged post changed something")
	}
	// The admin decides, revokes, rotates, deletes.
	wantFlash(t, admin.post("/requests", "action", "approve", "id", r1.ID), "/requests", "ok", "approved")
	wantFlash(t, admin.post("/requests", "action", "deny", "id", r2.ID, "reason", "no"), "/requests", "ok", "denied")
	wantFlash(t, admin.post("/sessions", "action", "revoke", "id", sess.ID), "/sessions", "ok", "revoked")
	if pl.sessionStatus(t, sess.ID) != apiwire.SessionRevoked {
		t.Fatal("not revoked")
	}
	if rp := admin.post("/agents", "action", "rotate", "name", "ci-bot"); rp.status != 200 || !strings.Contains(rp.body, `id="agent-token">avt_`) {
		t.Fatalf("rotate: %d", rp.status)
	}
	wantFlash(t, admin.post("/agents", "action", "delete", "name", "ci-bot"), "/agents", "ok", "deleted")
	wantFlash(t, admin.post("/credentials", "action", "delete", "name", "OPENAI_API_KEY"), "/credentials", "ok", "deleted")
	// Operators: an admin is refused (owner only), the admin token is not.
	wantFlash(t, admin.post("/operators", "action", "create", "name", "olga", "password", testPassword, "role", "viewer"), "/operators", "error", "needs owner")
	owner := uiSignIn(t, pl, "admin_token", pl.adminToken)
	wantFlash(t, owner.post("/operators", "action", "create", "name", "olga", "password", testPassword, "role", "viewer"), "/operators", "ok", "created")
	wantFlash(t, owner.post("/operators", "action", "update", "name", "olga", "role", "admin"), "/operators", "ok", "admin")
	wantFlash(t, owner.post("/operators", "action", "delete", "name", "olga"), "/operators", "ok", "deleted")
	// Audit shows it all.
	if ap := admin.get("/audit?action=operator.create"); !strings.Contains(ap.body, "olga") {
		t.Error("audit page")
	}
	// An unknown action is an error flash, not a crash.
	wantFlash(t, admin.post("/services", "action", "explode"), "/services", "error", "no such action")
	// Flash text is escaped.
	fp := admin.get(admin.post("/services", "action", "delete", "name", "<script>x</script>").header.Get("Location"))
	if !strings.Contains(fp.body, `id="flash"`) || strings.Contains(fp.body, "<script>x") {
		t.Fatalf("flash missing or not escaped:\n%s", fp.body)
	}
	// A crafted link's flash is not shown (only the UI's signed ones).
	if fp := admin.get("/services?error=" + url.QueryEscape("sign in at https://evil.example")); strings.Contains(fp.body, "evil.example") {
		t.Fatal("an unsigned flash is shown")
	}
}

// TestWebUINoSecretInPages: credential values, passwords and tokens
// put in through the UI appear on no page (but the agent token on its
// one answer).
func TestWebUINoSecretInPages(t *testing.T) {
	pl, _ := identityPipeline(t)
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	secrets := []string{"sk-live-VALUE-0123456789", bearerSecret, pl.adminToken, testPassword, b.cookie, "pw-of-olga-0123456789"}
	wantFlash(t, b.post("/credentials", "action", "put", "name", "STRIPE_KEY", "value", secrets[0]), "/credentials", "ok", "saved")
	wantFlash(t, b.post("/operators", "action", "create", "name", "olga", "password", secrets[5], "role", "viewer"), "/operators", "ok", "created")
	wantFlash(t, b.post("/services", "action", "put", "name", "stripe2", "host", "api.stripe.com", "auth_type", "basic", "password", "STRIPE_KEY"), "/services", "ok", "saved")
	created := b.post("/agents", "action", "create", "name", "bot", "services", "*")
	tok := regexp.MustCompile(`<pre id="agent-token">([^<]+)</pre>`).FindStringSubmatch(created.body)
	if tok == nil {
		t.Fatal("no agent token")
	}
	sess := pl.mint(t, asToken(tok[1]), apiwire.SessionRequest{TTL: "10m"})
	secrets = append(secrets, tok[1], sess.Token)
	for _, path := range append(uiPages, "/services?edit=stripe2", "/services?url=https%3A%2F%2Fapi.stripe.com%2F", "/login") {
		body := b.get(path).body
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("GET %s holds a secret (%d characters)", path, len(s))
			}
		}
	}
	// The CSRF token is on the page; the cookie secret never is.
	if !strings.Contains(b.get("/").body, `<meta name="csrf-token" content="`+identity.CSRFToken(b.cookie)+`">`) {
		t.Error("no csrf meta")
	}
}

func TestServiceMatchAPI(t *testing.T) {
	pl, up := identityPipeline(t)
	var m apiwire.ServiceMatch
	pl.must(t, pl.admin(), "GET", "/api/v1/services/match?url="+url.QueryEscape("https://"+up.hostPort+"/user?token=abc"), nil, 200, &m)
	if m.Service == nil || *m.Service != "github" || !m.TLS || strings.Contains(m.URL, "abc") {
		t.Fatalf("match: %+v", m)
	}
	pl.must(t, pl.admin(), "GET", "/api/v1/services/match?url="+url.QueryEscape("https://none.example/"), nil, 200, &m)
	if m.Service != nil || !strings.Contains(m.Reason, "no service covers none.example") {
		t.Fatalf("no match: %+v", m)
	}
	raw, _ := json.Marshal(m)
	if !strings.Contains(string(raw), `"service":null`) {
		t.Fatalf("service not null: %s", raw)
	}
	for _, bad := range []string{"", "ftp://x/", "/relative", "https://u:p@h/", "https://bad host/"} {
		wantAPIError(t, "url "+bad, pl.call(t, pl.admin(), "GET", "/api/v1/services/match?url="+url.QueryEscape(bad), nil), 400)
	}
	wantAPIError(t, "agent", pl.call(t, asToken(pl.createAgent(t, "a1", []string{"*"}, "").Token), "GET", "/api/v1/services/match?url=https://x/", nil), 403)
}

// TestWebUIActivity: proxied requests and a refusal show on the
// activity page (filters passed to the API) and the overview's recent
// refusals; the live view's hooks are there; no secret on the page.
func TestWebUIActivity(t *testing.T) {
	pl, api, s, agent := activityPipeline(t)
	stranger := pl.session(t)
	wantStatus(t, get(t, agent, api.https("/v1/items?k="+s.ph(t, "API_KEY"))), http.StatusOK)
	wantRefusal(t, get(t, agent, api.https("/v1"), "X-Forwarded-Key", stranger.ph(t, "API_KEY")), 403, "placeholder")
	activityList(t, pl, pl.admin(), "", func(es []apiwire.ActivityEntry) bool { return len(es) >= 2 })
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	p := b.get("/activity")
	if p.status != 200 || strings.Count(p.body, `class="activity-row`) < 2 || !strings.Contains(p.body, `id="activity-live"`) || !strings.Contains(p.body, "/v1/items") {
		t.Fatalf("activity page: %d %s", p.status, p.body)
	}
	// The live view's rows are the server's own (one row layout, in
	// the template, for both).
	tmpl := regexp.MustCompile(`<template id="activity-row-template"><tr>(.*?)</tr></template>`).FindStringSubmatch(p.body)
	if tmpl == nil || strings.Count(tmpl[1], `<td data-field="`) != strings.Count(p.body, "<th>") {
		t.Fatalf("the activity page has no row template with a data-field cell per column: %s", p.body)
	}
	refused := b.get("/activity?decision=refused&session=" + url.QueryEscape(s.id))
	if strings.Count(refused.body, `class="activity-row`) != 1 || !strings.Contains(refused.body, `data-query="decision=refused&amp;session=`) {
		t.Fatalf("filtered activity page: %s", refused.body)
	}
	byCode := b.get("/activity?code=placeholder")
	if strings.Count(byCode.body, `class="activity-row`) != 1 || !strings.Contains(byCode.body, `data-query="code=placeholder"`) || !strings.Contains(byCode.body, `name="code" value="placeholder"`) {
		t.Fatalf("activity page filtered by code: %s", byCode.body)
	}
	if bad := b.get("/activity?decision=maybe"); !strings.Contains(bad.body, `class="flash error"`) {
		t.Fatal("a bad filter is not shown as an error")
	}
	ov := b.get("/").body
	if !strings.Contains(ov, "placeholder") {
		t.Fatal("the overview does not list the refusal")
	}
	if !regexp.MustCompile(`id="activity-stats"[^>]*><b>0</b> activity entries dropped \([1-9][0-9]* written`).MatchString(ov) {
		t.Fatalf("the overview does not show the activity log's counts: %s", ov)
	}
	for _, secret := range []string{apiKeySecret, s.token, s.ph(t, "API_KEY"), stranger.ph(t, "API_KEY")} {
		for _, path := range []string{"/activity", "/"} {
			if strings.Contains(b.get(path).body, secret) {
				t.Errorf("%s holds a secret", path)
			}
		}
	}
}

// The admin token's login ends when the token changes: a broker whose
// configuration has another admin token refuses the login's cookie and
// bearer (its id is bound to the token it was opened with).
func TestAdminTokenLoginEndsWithTheToken(t *testing.T) {
	pl, _ := identityPipeline(t)
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	var login apiwire.Login
	pl.must(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{AdminToken: pl.adminToken}, 200, &login)
	ask := func(h http.Handler, header, value string) int {
		r := httptest.NewRequest("GET", "http://127.0.0.1/api/v1/whoami", nil)
		r.Header.Set(header, value)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	same := pl.apiWithAdminToken(pl.adminToken)
	rotated := pl.apiWithAdminToken("ava_" + strings.Repeat("fedcba9876543210", 4))
	cookie := identity.CookieName + "=" + b.cookie
	if got := ask(same, "Cookie", cookie); got != 200 {
		t.Fatalf("the admin-token login's cookie with the same token: %d, want 200", got)
	}
	if got := ask(same, "Authorization", "Bearer "+login.Token); got != 200 {
		t.Fatalf("the admin-token login's bearer with the same token: %d, want 200", got)
	}
	if got := ask(rotated, "Cookie", cookie); got != 401 {
		t.Errorf("the admin-token login's cookie after the token changed: %d, want 401", got)
	}
	if got := ask(rotated, "Authorization", "Bearer "+login.Token); got != 401 {
		t.Errorf("the admin-token login's bearer after the token changed: %d, want 401", got)
	}
}

// TestAdminLoginID: an admin token login's id is bound to the admin
// token; another token (a rotated one) or none does not validate it.
func TestAdminLoginID(t *testing.T) {
	id := adminLoginID("lgn_0123", "ava_one")
	if !validAdminLoginID(id, "ava_one") {
		t.Fatal("own id refused")
	}
	for _, c := range []struct{ id, token string }{{id, "ava_two"}, {id, ""}, {"lgn_0123", "ava_one"}, {"lgn_0124" + id[len("lgn_0123"):], "ava_one"}, {id + "0", "ava_one"}} {
		if validAdminLoginID(c.id, c.token) {
			t.Errorf("%q under %q validated", c.id, c.token)
		}
	}
}

// TestWebUIURLTesterKeepsNoQuery: the URL tester is a POST (with
// CSRF), and neither the query nor the fragment of the URL tested (where
// keys often are) appears on the page, in a redirect, or from a GET
// link.
func TestWebUIURLTesterKeepsNoQuery(t *testing.T) {
	pl, up := identityPipeline(t)
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	const secret = "sk-live-0123456789"
	target := "https://" + up.hostPort + "/user?key=" + secret + "#" + secret
	p := b.post("/services", "action", "match", "url", target)
	if p.status != http.StatusOK || !strings.Contains(p.body, `id="match-result"`) || !strings.Contains(p.body, "github") {
		t.Fatalf("POST match: %d %s\n%s", p.status, p.header.Get("Location"), p.body)
	}
	if strings.Contains(p.body, secret) || strings.Contains(p.header.Get("Location"), secret) {
		t.Fatal("the tested URL's query is on the page")
	}
	if !strings.Contains(p.body, `id="match-form" class="inline" method="post"`) {
		t.Fatal("the URL tester form is not a POST")
	}
	if g := b.get("/services?url=" + url.QueryEscape(target)); strings.Contains(g.body, secret) || strings.Contains(g.body, `id="match-result"`) {
		t.Fatal("a GET link runs the URL tester and echoes its query")
	}
	if p := b.do("POST", "/services", url.Values{"action": {"match"}, "url": {target}}); p.status != http.StatusForbidden {
		t.Fatalf("match without csrf: %d", p.status)
	}
}

// TestWhoamiPermissions: whoami says which changes the caller may make,
// as identity.Allowed decides them (the UI shows its edit controls by
// these, never by the role's name).
func TestWhoamiPermissions(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "admin")
	pl.createOperator(t, "vera", testPassword, "viewer")
	pl.createOperator(t, "olav", testPassword, "owner")
	admin := apiwire.WhoamiCan{ManageSecrets: true, ManageAgents: true, DecideRequests: true, ManageSessions: true}
	owner := admin
	owner.ManageOperators = true
	for _, c := range []struct {
		login []string
		want  apiwire.WhoamiCan
	}{
		{[]string{"name", "vera", "password", testPassword}, apiwire.WhoamiCan{}},
		{[]string{"name", "alice", "password", testPassword}, admin},
		{[]string{"name", "olav", "password", testPassword}, owner},
		{[]string{"admin_token", pl.adminToken}, owner},
	} {
		b := uiSignIn(t, pl, c.login...)
		var me apiwire.Whoami
		pl.must(t, apiCall{cookie: b.cookie}, "GET", "/api/v1/whoami", nil, 200, &me)
		if me.Can != c.want {
			t.Errorf("%v: whoami can %+v, want %+v", c.login[1], me.Can, c.want)
		}
	}
}

// TestWebUISignInStatus: the sign-in page answers with the API's own
// status (401 wrong password, 429 with Retry-After over the limit, 403
// for a cross-site post) and relies on the API's same-origin rule.
func TestWebUISignInStatus(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "admin")
	anon := &browser{t: t, pl: pl}
	wrong := url.Values{"name": {"alice"}, "password": {"not the password at all"}}
	if p := anon.do("POST", "/login", wrong, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"); p.status != http.StatusForbidden {
		t.Fatalf("cross-site sign-in: %d", p.status)
	}
	var last page
	for range 10 {
		if last = anon.do("POST", "/login", wrong); last.status != http.StatusUnauthorized {
			break
		}
	}
	if last.status != http.StatusTooManyRequests || last.header.Get("Retry-After") == "" || !strings.Contains(last.body, `id="flash"`) {
		t.Fatalf("over the limit: %d Retry-After %q", last.status, last.header.Get("Retry-After"))
	}
}

// The services page lists the discovered hosts, each with a link that
// starts a service for it (the form's host filled in).
func TestWebUIDiscoveredHosts(t *testing.T) {
	pl, _, s, _ := activityPipeline(t)
	pl.askInTunnel(t, "api.stripe.example:8443", basicAuth(s.token), "Authorization: Bearer sk_live_webui")
	findEntry(t, pl, "the refusal", func(e activity.Entry) bool { return e.Host == "api.stripe.example" })
	if err := pl.discovered.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	p := b.get("/services")
	if p.status != 200 || !strings.Contains(p.body, `<tr data-host="api.stripe.example"><td><code>api.stripe.example:8443</code></td><td>1</td>`) ||
		!strings.Contains(p.body, `href="/services?host=api.stripe.example:8443#service-form"`) || !strings.Contains(p.body, "<td>Bearer</td>") {
		t.Fatalf("services page: %d %s", p.status, p.body)
	}
	if strings.Contains(p.body, "sk_live_webui") {
		t.Fatal("the services page holds the agent's key")
	}
	add := b.get("/services?host=api.stripe.example:8443")
	if !strings.Contains(add.body, `name="host" value="api.stripe.example:8443"`) {
		t.Fatalf("the add link does not fill in the host: %s", add.body)
	}
}

// The service form carries the rules: saved from it, shown back in the
// edit form, so a later edit keeps them.
func TestWebUIServiceRules(t *testing.T) {
	pl, _, _, _ := activityPipeline(t)
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	wantFlash(t, b.post("/services", "action", "put", "name", "gh", "host", "api.github.com", "auth_type", "bearer", "token", "GH",
		"methods", "GET, HEAD", "paths", "/repos/*\n!/repos/*/admin/*", "rate_limit", "60/m", "max_request_body", "10MiB"), "/services", "ok", "saved")
	var list apiwire.ServiceList
	pl.must(t, pl.admin(), "GET", "/api/v1/services", nil, 200, &list)
	var svc apiwire.Service
	for _, s := range list.Services {
		if s.Name == "gh" {
			svc = s
		}
	}
	if !slices.Equal(svc.Methods, []string{"GET", "HEAD"}) || !slices.Equal(svc.Paths, []string{"/repos/*", "!/repos/*/admin/*"}) ||
		svc.RateLimit != "60/m" || svc.MaxRequestBody != "10MiB" {
		t.Fatalf("saved %+v", svc)
	}
	edit := b.get("/services?edit=gh").body
	for _, want := range []string{`name="methods" value="GET, HEAD"`, ">/repos/*\n!/repos/*/admin/*</textarea>", `name="rate_limit" value="60/m"`, `name="max_request_body" value="10MiB"`} {
		if !strings.Contains(edit, want) {
			t.Errorf("the edit form lacks %q", want)
		}
	}
	wantFlash(t, b.post("/services", "action", "put", "name", "gh", "host", "api.github.com", "auth_type", "bearer", "token", "GH", "rate_limit", "0/m"),
		"/services", "error", "rate_limit")
}

// A passthrough saved with "Relay TLS unread" is intercept: false, and
// its edit form keeps the box ticked; another type ignores the box.
func TestWebUIServiceNoIntercept(t *testing.T) {
	pl, _, _, _ := activityPipeline(t)
	b := uiSignIn(t, pl, "admin_token", pl.adminToken)
	wantFlash(t, b.post("/services", "action", "put", "name", "npm", "host", "registry.npmjs.org", "auth_type", "passthrough", "no_intercept", "1"),
		"/services", "ok", "saved")
	wantFlash(t, b.post("/services", "action", "put", "name", "gh", "host", "api.github.com", "auth_type", "bearer", "token", "GH", "no_intercept", "1"),
		"/services", "ok", "saved")
	var list apiwire.ServiceList
	pl.must(t, pl.admin(), "GET", "/api/v1/services", nil, 200, &list)
	for _, s := range list.Services {
		if want := s.Name != "npm"; s.Intercepts() != want {
			t.Errorf("%s: intercepts %v, want %v", s.Name, s.Intercepts(), want)
		}
	}
	if edit := b.get("/services?edit=npm").body; !strings.Contains(edit, `name="no_intercept" value="1" checked`) {
		t.Error("the edit form lost intercept: false")
	}
	if edit := b.get("/services?edit=gh").body; strings.Contains(edit, `name="no_intercept" value="1" checked`) {
		t.Error("the box is ticked for an intercepted service")
	}
}
