package e2etest

// The web UI journeys of issue 11 in a real browser (Debian's chromium,
// browser_test.go): sign in with an operator and with the admin token;
// see credentials synced from a real HashiCorp Vault; add a service from
// the GitHub template and test a URL against it; create an agent (its
// token shown once), run it under av-launch and watch its requests and a
// refusal appear on the activity page without a reload; revoke its
// session and see its next request refused; a viewer sees no edit
// controls and its forged posts are refused. The harness checks every
// page read for every secret of the journey.
//
// The page hooks are the stable ones of caddymodule/webui/doc.go.

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends/hashicorp/vaulttest"
)

// submitSel is the submit button of the form sel.
func submitSel(form string) string {
	return form + ` button:not([type="button"]):not([type="reset"]), ` + form + ` input[type="submit"]`
}

// rows is the whitespace-collapsed text of every element matching sel.
func (b *browser) rows(sel string) []string {
	b.t.Helper()
	return get(b, "reading "+sel, chromedp.Evaluate[[]string](fmt.Sprintf(
		`Array.from(document.querySelectorAll(%q), e => e.textContent.replace(/\s+/g, " ").trim())`, sel)))
}

// row is the first of rows(sel) holding every one of subs, or "".
func (b *browser) row(sel string, subs ...string) string {
	b.t.Helper()
	for _, r := range b.rows(sel) {
		if containsAll(r, subs...) {
			return r
		}
	}
	return ""
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// cells is the text of each cell (td, th) of the first element (a tr)
// matching sel whose text holds sub ("" for any); empty if none does.
func (b *browser) cells(sel, sub string) []string {
	b.t.Helper()
	return get(b, "reading the cells of "+sel, chromedp.Evaluate[[]string](fmt.Sprintf(`(() => {
		for (const r of document.querySelectorAll(%q)) {
			if (r.textContent.includes(%q)) return Array.from(r.cells, c => c.textContent.replace(/\s+/g, " ").trim());
		}
		return [];
	})()`, sel, sub)))
}

// value is the current value of the form field sel.
func (b *browser) value(sel string) string {
	b.t.Helper()
	return get(b, "reading the value of "+sel, chromedp.Value(chromedp.CSS(sel)))
}

// path is the current page's URL path.
func (b *browser) path() string {
	b.t.Helper()
	u, err := url.Parse(b.location())
	if err != nil {
		b.t.Fatal(err)
	}
	return u.Path
}

// fetchPost runs fetch(path, POST form) in the page (the page's own
// origin and cookie: what a forged post from the signed-in browser
// does), following redirects, and returns the final status and URL.
// withCSRF adds the page's CSRF token as the form's csrf field.
func (b *browser) fetchPost(path string, form url.Values, withCSRF bool) (int, string) {
	b.t.Helper()
	js := fmt.Sprintf(`(async () => {
		const f = new URLSearchParams(%q);
		if (%t) { const m = document.querySelector('meta[name="csrf-token"]'); f.set("csrf", m ? m.content : ""); }
		const r = await fetch(%q, {method: "POST", body: f});
		return [String(r.status), r.url];
	})()`, form.Encode(), withCSRF, path)
	r := get(b, "fetch POST "+path, chromedp.Evaluate[[]string](js, func(p *runtime.EvaluateParams) { p.AwaitPromise = ptrTrue() }))
	st, _ := strconv.Atoi(r[0])
	return st, strings.TrimPrefix(r[1], b.base)
}

// refusedFetch reports whether fetchPost's answer is a refusal: 403, or
// the page again with an error flash.
func refusedFetch(status int, finalURL, path string) bool {
	u, err := url.Parse(finalURL)
	return status == http.StatusForbidden || err == nil && u.Path == path && u.Query().Get("error") != ""
}

func ptrTrue() *bool { t := true; return &t }

// signIn signs the browser in on /login with name and password, from
// the page a signed-out visit to next redirects to; it ends on next.
func (b *browser) signIn(next, name, password string) {
	b.t.Helper()
	b.visit(next)
	if loc := b.location(); !strings.HasPrefix(loc, "/login?next=") && !(next == "/" && loc == "/login") {
		b.t.Fatalf("signed-out visit to %s ended at %s, want /login?next=...", next, loc)
	}
	form := `form#login-form`
	b.fill(map[string]string{form + ` input[name="name"]`: name, form + ` input[name="password"]`: password})
	if st := b.submit(submitSel(form)); st != http.StatusOK {
		b.t.Fatalf("signing in as %s: status %d\n%s", name, st, b.html())
	}
	if p := b.path(); p != next {
		b.t.Fatalf("after signing in as %s: at %s, want %s (the next parameter)", name, p, next)
	}
}

// signOut posts the sign-out form and checks that pages redirect again.
func (b *browser) signOut() {
	b.t.Helper()
	b.visit("/")
	if st := b.submit(submitSel(`form#logout-form`)); st != http.StatusOK {
		b.t.Fatalf("signing out: status %d", st)
	}
	b.visit("/credentials")
	if loc := b.location(); !strings.HasPrefix(loc, "/login") {
		b.t.Fatalf("after signing out /credentials shows %s, want the login page", loc)
	}
}

var agentTokenRE = regexp.MustCompile(`avt_[A-Za-z0-9_-]{20,}`)

func TestWebUIJourneys(t *testing.T) {
	// A real Vault with one secret, and the broker syncing it.
	v := vaulttest.Start(t)
	const vaultValue = "ghp_fromVaultForTheWebUI_0123456789abcdef"
	v.PutKV2(t, "secret", "agents/github", map[string]any{"GITHUB_TOKEN": vaultValue})
	vaultToken := v.CreateToken(t, []string{"root"}, "1h", true)
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)    // the agent's service
	other := newUpstream(t, ca, true) // a host outside the agent's scope
	drainHits(t, up)
	drainHits(t, other)
	cfg := vaultCaddyfile(t, tokenStore(v.Addr, ""))
	s := startServer(t, ca, serverOpts{config: cfg, extraEnv: []string{"VAULT_TEST_TOKEN=" + vaultToken}})
	eventually(t, 15*time.Second, "the Vault secret synced", func() bool { return s.credential(t, "GITHUB_TOKEN") != nil })

	const ownerPass, viewerPass = "alice's web UI pass phrase", "victor's web UI pass phrase"
	s.createOperator("alice", ownerPass, "owner")
	s.createOperator("victor", viewerPass, "viewer")
	s.putService("upstream", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	s.putService("other", passthrough(other.hostPort()))

	b := newBrowser(t, "http://"+s.apiAddr)
	b.secret("the Vault secret's value", vaultValue)
	b.secret("the Vault token", vaultToken, v.RootToken)
	b.secret("the admin token", s.adminToken())
	b.secret("an operator's password", ownerPass, viewerPass)
	b.secret("the master password", masterPassword)

	// Sign in with an operator; the login cookie is a secret too.
	b.signIn("/credentials", "alice", ownerPass)
	b.secret("alice's login cookie", b.cookie(loginCookie))

	// A token source (defined through the API), used once through the
	// proxy so it has fetched: the page shows its metadata, never the
	// token or its client secret (the harness checks every page read).
	st := newTokenStub(t, ca)
	const uiClientSecret = "GOCSPX-client-secret" // the one tokenStub accepts
	b.secret("the token source's client secret", uiClientSecret)
	s.putCredential("UI_CLIENT_SECRET", uiClientSecret)
	s.mustAPI("PUT", "/api/v1/credentials/UI_CC", map[string]any{"kind": "oauth2_client_credentials", "token_url": st.URL + "/token",
		"client_id": "123-abc.apps.googleusercontent.com", "client_secret": "UI_CLIENT_SECRET"}, http.StatusCreated, nil)
	s.putService("tokensvc", map[string]any{"host": strings.TrimPrefix(st.URL, "https://") + "/api/*", "auth": map[string]any{"type": "bearer", "token": "UI_CC"}})
	tsess := s.newSession(t, []string{"tokensvc"}, "30m")
	tsCA := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(tsCA, []byte(tsess.CAPEM), 0o600)
	if body, code := curlCode(t, s, tsCA, tsess.Token, st.URL+"/api/ui"); code != http.StatusOK || st.oauth.Load() != 1 {
		t.Fatalf("the token source's first use: %d %q after %d token calls", code, body, st.oauth.Load())
	}
	b.secret("the token source's access token", st.secrets()...)
	b.secret("the token session's agent token", tsess.Token)

	// Credentials synced from Vault: store, source path and version.
	b.visit("/credentials")
	if c := b.cells(`#token-sources-table tr[data-name="UI_CC"]`, ""); len(c) < 5 || c[0] != "UI_CC" || c[1] != "oauth2_client_credentials" ||
		!regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$`).MatchString(c[2]) || !regexp.MustCompile(`^\d{4}-`).MatchString(c[3]) || c[4] != "—" {
		t.Fatalf("the credentials page's token source row %q: want UI_CC, oauth2_client_credentials, an expiry, a last refresh, no error\n%s", c, b.html())
	}
	if b.row("#credentials-table tr", "UI_CC") != "" {
		t.Error("the token source is listed with the stored values")
	}
	if c := b.cells(`#credentials-table tr[data-name="GITHUB_TOKEN"]`, ""); !slices.Contains(c, "vault") || !slices.ContainsFunc(c, func(x string) bool { return strings.Contains(x, "agents/github") }) ||
		!slices.Contains(c, "1") && !slices.Contains(c, "v1") {
		t.Fatalf("the credentials page's GITHUB_TOKEN row %q lacks a cell with store vault, one with source agents/github, one with version 1 (or v1)\n%s", c, b.html())
	}
	if c := b.cells(`#stores-table tr`, "vault"); !slices.Contains(c, "vault") || !slices.Contains(c, "ok") {
		t.Errorf("the credentials page's stores table has no row for store vault with a cell \"ok\" (its status): %q\n%s", c, strings.Join(b.rows("#stores-table tr"), "\n"))
	}
	b.screenshot("ui-credentials")

	// A service from the GitHub template (the template link works
	// without script), then the URL tester.
	b.visit("/services")
	tmpl := b.attr(`a.template-link[href*="template=github"]`, "href")
	b.visit("/services" + tmpl[strings.Index(tmpl, "?"):])
	create := `form#service-form`
	if host := b.value(create + ` input[name="host"]`); !strings.Contains(host, "github.com") {
		t.Fatalf("the GitHub template filled host %q", host)
	}
	if typ := b.value(create + ` [name="auth_type"]`); typ != "bearer" {
		t.Fatalf("the GitHub template chose auth type %q, want bearer", typ)
	}
	b.fill(map[string]string{create + ` input[name="name"]`: "github", create + ` [name="token"]`: "GITHUB_TOKEN"})
	if st := b.submit(submitSel(create)); st != http.StatusOK {
		t.Fatalf("creating the github service: %d\n%s", st, b.html())
	}
	if b.path() != "/services" {
		t.Fatalf("after creating a service: at %s", b.location())
	}
	var svcs apiwire.ServiceList
	s.must(s.admin(), "GET", "/api/v1/services", nil, http.StatusOK, &svcs)
	i := slices.IndexFunc(svcs.Services, func(x services.Service) bool { return x.Name == "github" })
	if i < 0 || !strings.Contains(svcs.Services[i].Host, "github.com") || svcs.Services[i].Auth.Type != "bearer" || svcs.Services[i].Auth.Token != "GITHUB_TOKEN" {
		t.Fatalf("the service created from the GitHub template: %+v", svcs.Services)
	}
	if r := b.rows(`#services-table tr[data-name="github"]`); len(r) != 1 || !strings.Contains(r[0], "github.com") {
		t.Fatalf("the services page lists no github row with its host: %q", r)
	}
	tester := `form#match-form`
	b.fill(map[string]string{tester + ` input[name="url"]`: "https://api.github.com/user"})
	b.submit(submitSel(tester))
	b.waitFor("#match-result")
	if r := b.rows("#match-result"); len(r) != 1 || !strings.Contains(r[0], "github") {
		t.Fatalf("the URL tester for https://api.github.com/user shows %q, want the github service", r)
	}
	b.screenshot("ui-services")
	b.fill(map[string]string{tester + ` input[name="url"]`: "https://nothing-covers-this.example/"})
	b.submit(submitSel(tester))
	b.waitFor("#match-result")
	if r := b.rows("#match-result"); len(r) != 1 || strings.Contains(r[0], "github") {
		t.Fatalf("the URL tester for an uncovered host shows %q, want no service", r)
	}

	// An agent created in the UI: its token is on the result page once,
	// and on no page after.
	b.visit("/agents")
	agentForm := `form#agent-form`
	b.fill(map[string]string{agentForm + ` input[name="name"]`: "webui-agent"})
	if b.count(agentForm+` input[name="services"][type="checkbox"]`) > 0 {
		b.run("choosing the upstream service", chromedp.Click(chromedp.CSS(agentForm+` input[name="services"][value="upstream"]`)))
	} else {
		b.fill(map[string]string{agentForm + ` [name="services"]`: "upstream"})
	}
	if st := b.submit(submitSel(agentForm)); st != http.StatusOK {
		t.Fatalf("creating the agent: %d\n%s", st, b.html())
	}
	agentToken := strings.TrimSpace(get(b, "reading #agent-token", chromedp.TextContent(chromedp.CSS("#agent-token"))))
	if !agentTokenRE.MatchString(agentToken) {
		t.Fatalf("the agent-creation result page's #agent-token holds no avt_ token:\n%s", b.rawHTML())
	}
	b.secret("the agent's token", agentToken)
	b.htmlAllowingOnce(agentToken)
	resultPage := b.location()
	var a apiwire.Agent
	s.must(s.admin(), "GET", "/api/v1/agents/webui-agent", nil, http.StatusOK, &a)
	if !slices.Equal(a.Services, []string{"upstream"}) {
		t.Fatalf("the agent created in the UI has services %v, want [upstream]", a.Services)
	}
	b.visit("/agents") // checked: the token is gone
	if st, _ := b.visitStatus(resultPage); st == http.StatusOK && strings.Contains(b.rawHTML(), agentToken) {
		t.Fatal("reloading the agent-creation result shows the token again")
	}

	// The live activity view: the agent's requests and a refusal appear
	// without a reload.
	b.visit("/activity?agent=webui-agent")
	// The stream is open (it answers once it has read the log): what
	// the agent does from now on is news to it.
	b.waitFor(`#activity-live[data-state="on"]`)
	b.mark("before-agent")
	agent := startAgent(t, s, agentToken, fmt.Sprintf(
		`curl -sS -o /dev/null -w 'ok %%{http_code}\n' https://%s/webui-live-ok; `+
			`curl -sS -o /dev/null -w 'refused %%{http_code} %%{http_connect}\n' https://%s/webui-live-refused; `+
			`echo READY; read line; `+
			`curl -sS -o /dev/null -w 'after %%{http_code} %%{http_connect}\n' https://%s/webui-after-revoke; echo DONE`,
		up.hostPort(), other.hostPort(), up.hostPort()))
	b.secret("the agent's session token", agent.sessionToken)
	agent.waitLine(t, "READY")
	if !strings.Contains(agent.output(), "ok 200") {
		t.Fatalf("the agent's request through the proxy failed:\n%s", agent.output())
	}
	_, otherPort, _ := strings.Cut(other.hostPort(), ":")
	deadline := time.Now().Add(10 * time.Second)
	const liveRows = `#activity-rows tr.activity-row`
	for b.row(liveRows, "/webui-live-ok", "forwarded") == "" || b.row(liveRows, otherPort, "refused") == "" {
		if time.Now().After(deadline) {
			t.Fatalf("the activity page did not show the agent's forwarded request and its refusal within 10s; rows:\n%s", strings.Join(b.rows(liveRows), "\n"))
		}
		<-time.After(100 * time.Millisecond)
	}
	if !b.marked("before-agent") {
		t.Fatal("the activity page reloaded: the entries must arrive through the live view")
	}
	b.html() // the live rows hold no secret either
	b.screenshot("ui-activity")

	// Revoke the agent's session on the sessions page; its next
	// request is refused.
	var sid string
	for _, se := range s.sessionList() {
		if se.Agent == "webui-agent" && se.Status == apiwire.SessionActive {
			sid = se.ID
		}
	}
	if sid == "" {
		t.Fatalf("no active session of webui-agent: %+v", s.sessionList())
	}
	b.visit("/sessions")
	sessionRow := fmt.Sprintf(`#sessions-table tr[data-id=%q]`, sid)
	if r := b.rows(sessionRow); len(r) != 1 || !containsAll(r[0], "webui-agent", "upstream") || b.attr(sessionRow, "data-state") != "active" {
		t.Fatalf("the sessions page's row for %s is %q, want the agent, its scope, data-state active", sid, r)
	}
	b.screenshot("ui-sessions")
	revoke := sessionRow + ` form.revoke-form`
	if st := b.submit(submitSel(revoke)); st != http.StatusOK {
		t.Fatalf("revoking: %d\n%s", st, b.html())
	}
	if se, _ := s.sessionInfo(sid); se.Status != apiwire.SessionRevoked {
		t.Fatalf("after revoking in the UI the session is %q", se.Status)
	}
	// Ended sessions are listed in a table of their own.
	endedRow := fmt.Sprintf(`tr[data-id=%q]`, sid)
	if n := b.count(endedRow); n != 1 {
		t.Fatalf("after the revocation the sessions page has %d rows for the session, want 1\n%s", n, b.html())
	}
	if st := b.attr(endedRow, "data-state"); st != "ended" {
		t.Errorf("after the revocation the sessions page shows the session with data-state %q, want ended", st)
	}
	if r := b.rows(endedRow); len(r) != 1 || !strings.Contains(r[0], "revoked") {
		t.Errorf("the sessions page's row of the revoked session: %q, want it to say revoked", r)
	}
	resp, _ := rawConnect(t, s.proxyAddr, up.hostPort(), basicAuth(agent.sessionToken))
	if resp.StatusCode != http.StatusProxyAuthRequired && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a CONNECT with the revoked session's token: %d, want 407 (or 403)", resp.StatusCode)
	}
	hits := up.count()
	agent.proceed()
	agent.wait(t)
	if out := agent.output(); strings.Contains(out, "after 200") || up.count() != hits {
		t.Fatalf("the agent's request after the revocation reached the upstream:\n%s", out)
	}

	// Signed out, then in with the admin token (as owner): the overview.
	b.signOut()
	b.visit("/")
	form := `form#admin-login-form`
	b.fill(map[string]string{form + ` input[name="admin_token"]`: s.adminToken()})
	if st := b.submit(submitSel(form)); st != http.StatusOK {
		t.Fatalf("signing in with the admin token: %d", st)
	}
	if p := b.path(); p != "/" {
		t.Fatalf("after the admin-token sign-in at %s, want /", p)
	}
	b.secret("the admin-token login's cookie", b.cookie(loginCookie))
	h := b.html()
	mustContain(t, "overview", h, "vault")
	b.screenshot("ui-overview")
	for _, p := range webUIPages {
		if st, _ := b.visitStatus(p); st != http.StatusOK {
			t.Errorf("as the admin token, GET %s: %d", p, st)
		}
	}
	b.signOut()

	// A viewer sees no edit controls, and its forged posts are refused.
	b.signIn("/", "victor", viewerPass)
	b.secret("victor's login cookie", b.cookie(loginCookie))
	for _, p := range webUIPages {
		st, _ := b.visitStatus(p)
		if p == "/operators" {
			continue // owner only: the API's 403, or a page without forms
		}
		if st != http.StatusOK {
			t.Errorf("the viewer's GET %s: %d", p, st)
		}
		n := get(b, "counting write forms", chromedp.Evaluate[int](
			`Array.from(document.forms).filter(f => f.method.toLowerCase() === "post" && f.id !== "match-form" && f.id !== "logout-form").length`))
		if n != 0 {
			t.Errorf("the viewer's %s has %d write forms", p, n)
		}
		if n := b.count(`input[type="password"], button[value="delete"], button[value="revoke"]`); n != 0 {
			t.Errorf("the viewer's %s has %d edit controls", p, n)
		}
	}
	if role := b.attr("body", "data-role"); role != "viewer" {
		t.Errorf("the viewer's pages say data-role %q", role)
	}
	if n := b.count(`#nav-operators, nav a[href="/operators"]`); n != 0 {
		t.Error("the viewer's navigation links to /operators (owner only)")
	}
	b.visit("/credentials")
	for _, withCSRF := range []bool{false, true} {
		for path, form := range map[string]url.Values{
			"/credentials": {"action": {"put"}, "name": {"VIEWER_BROWSER"}, "value": {"viewer-forged-0123456789"}},
			"/agents":      {"action": {"delete"}, "name": {"webui-agent"}},
		} {
			st, final := b.fetchPost(path, form, withCSRF)
			if !refusedFetch(st, final, path) || !withCSRF && st != http.StatusForbidden {
				t.Errorf("the viewer's forged POST %s (csrf %t): %d at %s, want 403 (without csrf) or the page with an error", path, withCSRF, st, final)
			}
		}
	}
	if slices.Contains(s.credentialNames(t), "VIEWER_BROWSER") {
		t.Fatal("the viewer's forged post created a credential")
	}
	s.must(s.admin(), "GET", "/api/v1/agents/webui-agent", nil, http.StatusOK, nil) // not deleted
	b.html()
}

// launchedAgent is an av-launch run whose child waits on stdin.
type launchedAgent struct {
	cmd          *exec.Cmd
	stdin        io.WriteCloser
	out          *logBuffer
	exited       chan struct{}
	sessionToken string
}

// startAgent runs `av-launch -- sh -c script` with the agent's token;
// the child first writes its HTTPS_PROXY to a file (for the session
// token), then runs script.
func startAgent(t *testing.T, s *server, token, script string) *launchedAgent {
	t.Helper()
	proxyFile := filepath.Join(t.TempDir(), "proxy")
	child := `echo "$HTTPS_PROXY" > ` + proxyFile + `.tmp && mv ` + proxyFile + `.tmp ` + proxyFile + ` && ` + script
	cmd := exec.Command(bin("av-launch"), "--addr", "http://"+s.apiAddr, "--", "sh", "-c", child)
	cmd.Env = launchEnv(t, "AGENT_VAULT_TOKEN="+token, "TMPDIR="+t.TempDir())
	a := &launchedAgent{cmd: cmd, out: newLogBuffer(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = a.out, a.out
	var err error
	if a.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() { a.stdin.Close(); cmd.Process.Kill(); <-a.exited })
	a.sessionToken = proxyToken(t, waitFile(t, proxyFile, 30*time.Second))
	return a
}

func (a *launchedAgent) output() string { return a.out.String() }

func (a *launchedAgent) waitLine(t *testing.T, line string) {
	t.Helper()
	select {
	case <-a.out.waitFor(line + "\n"):
	case <-a.exited:
		t.Fatalf("av-launch exited before %q:\n%s", line, a.output())
	case <-time.After(60 * time.Second):
		t.Fatalf("av-launch did not print %q within 60s:\n%s", line, a.output())
	}
}

// proceed lets the child past its read.
func (a *launchedAgent) proceed() {
	io.WriteString(a.stdin, "go\n")
	a.stdin.Close()
}

func (a *launchedAgent) wait(t *testing.T) {
	t.Helper()
	select {
	case <-a.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("av-launch did not exit within 60s:\n%s", a.output())
	}
}
