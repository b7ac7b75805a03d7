package webui

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
)

// fakeAPI answers whoami for the one known cookie and counts every
// other request (a change must never reach it without a valid token).
type fakeAPI struct {
	cookie string
	role   string
	// can is whoami's "can" object ("{}" when empty).
	can string
	// fail is a path the fake answers 503 to.
	fail string
	// answers are bodies the fake sends for GET paths ("{}" otherwise).
	answers map[string]string
	calls   atomic.Int64
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, fromCookie, err := identity.RequestToken(r)
	if err != nil || !fromCookie || tok != f.cookie {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"log in"}`))
		return
	}
	if r.URL.Path == "/api/v1/whoami" {
		can := f.can
		if can == "" {
			can = "{}"
		}
		w.Write([]byte(`{"kind":"operator","name":"<b>al</b>","role":"` + f.role + `","can":` + can + `}`))
		return
	}
	f.calls.Add(1)
	if r.URL.Path == f.fail {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"the state database is unreachable"}`))
		return
	}
	if r.Method != http.MethodGet && r.Header.Get(identity.CSRFHeader) != identity.CSRFToken(f.cookie) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":"no csrf header"}`))
		return
	}
	if a, ok := f.answers[r.URL.Path]; ok && r.Method == http.MethodGet {
		w.Write([]byte(a))
		return
	}
	w.Write([]byte(`{}`))
}

func newFake(t *testing.T, role string) (*UI, *fakeAPI) {
	t.Helper()
	secret, _, err := identity.NewToken(identity.KindLoginCookie)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{cookie: secret, role: role}
	return New(f, Options{}), f
}

func serve(u *UI, method, target, cookie string, form url.Values) *httptest.ResponseRecorder {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(method, target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: identity.CookieName, Value: cookie})
	}
	w := httptest.NewRecorder()
	u.ServeHTTP(w, r)
	return w
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/services": "/services", "/activity?agent=x": "/activity?agent=x", "": "/", "services": "/",
		"//evil.example": "/", "/\\evil.example": "/", "https://evil.example/": "/", "/x\r\nSet-Cookie:": "/", "javascript:alert(1)": "/",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCSRFBeforeAPI: a post without the right csrf field is 403 and
// the API is never called; with it, the API gets the CSRF header.
func TestCSRFBeforeAPI(t *testing.T) {
	u, f := newFake(t, "admin")
	for _, form := range []url.Values{{}, {"csrf": {""}}, {"csrf": {"x"}}, {"csrf": {identity.CSRFToken("other")}}, {"csrf": {f.cookie}}} {
		form.Set("action", "delete")
		form.Set("name", "X")
		for _, path := range []string{"/credentials", "/services", "/logout", "/"} {
			if w := serve(u, "POST", path, f.cookie, form); w.Code != http.StatusForbidden {
				t.Errorf("POST %s %v: %d", path, form, w.Code)
			}
		}
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("the API was called %d times", n)
	}
	w := serve(u, "POST", "/credentials", f.cookie, url.Values{"csrf": {identity.CSRFToken(f.cookie)}, "action": {"delete"}, "name": {"X"}})
	if w.Code != http.StatusSeeOther || !strings.Contains(w.Header().Get("Location"), "ok=") || f.calls.Load() != 1 {
		t.Fatalf("valid post: %d %s, %d calls", w.Code, w.Header().Get("Location"), f.calls.Load())
	}
}

func TestHeadersAndRedirects(t *testing.T) {
	u, f := newFake(t, "viewer")
	for _, path := range []string{"/", "/credentials", "/services", "/sessions", "/activity", "/agents", "/requests", "/operators", "/audit", "/ca"} {
		w := serve(u, "GET", path, "", nil)
		if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login") {
			t.Errorf("signed-out %s: %d %s", path, w.Code, w.Header().Get("Location"))
		}
		if w.Header().Get("Content-Security-Policy") != csp || w.Header().Get("X-Frame-Options") != "DENY" || w.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", path, w.Header())
		}
		w = serve(u, "GET", path, f.cookie, nil)
		if w.Code != 200 || !strings.Contains(w.Body.String(), "&lt;b&gt;al&lt;/b&gt;") || strings.Contains(w.Body.String(), "<b>al</b>") {
			t.Errorf("signed-in %s: %d (the name must be escaped)", path, w.Code)
		}
	}
	if w := serve(u, "GET", "/static/", "", nil); w.Code != 404 {
		t.Errorf("static listing: %d", w.Code)
	}
	if w := serve(u, "GET", "/static/app.js", "", nil); w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), "javascript") {
		t.Errorf("app.js: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	if w := serve(u, "DELETE", "/services", f.cookie, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE page: %d", w.Code)
	}
	if w := serve(u, "GET", "/logout", f.cookie, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /logout: %d", w.Code)
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\n b\r\n\tc"); got != "a b c" {
		t.Errorf("oneLine: %q", got)
	}
	long := oneLine(strings.Repeat("é", 400))
	if n := len([]rune(long)); n != 301 || !strings.HasSuffix(long, "…") {
		t.Errorf("oneLine long: %d runes", n)
	}
}

// TestFlashNotSpoofable: a crafted link's ?error= or ?ok= text is not
// shown as a flash on any page (/login included); the UI's own
// redirect after a write (signed with the login's CSRF token) is.
func TestFlashNotSpoofable(t *testing.T) {
	u, f := newFake(t, "admin")
	const lure = "get the new token at https://evil.example"
	for _, target := range []string{"/credentials?error=" + url.QueryEscape(lure), "/credentials?ok=" + url.QueryEscape(lure), "/login?error=" + url.QueryEscape(lure), "/login?ok=" + url.QueryEscape(lure)} {
		for _, cookie := range []string{"", f.cookie} {
			w := serve(u, "GET", target, cookie, nil)
			if strings.Contains(w.Body.String(), "evil.example") || strings.Contains(w.Body.String(), `id="flash"`) {
				t.Errorf("GET %s (cookie %t): the crafted flash is shown: %d", target, cookie != "", w.Code)
			}
		}
	}
	w := serve(u, "POST", "/credentials", f.cookie, url.Values{"csrf": {identity.CSRFToken(f.cookie)}, "action": {"delete"}, "name": {"X"}})
	loc := w.Header().Get("Location")
	if w.Code != http.StatusSeeOther {
		t.Fatalf("post: %d", w.Code)
	}
	if p := serve(u, "GET", loc, f.cookie, nil); !strings.Contains(p.Body.String(), `id="flash"`) || !strings.Contains(p.Body.String(), "X deleted") {
		t.Fatalf("the UI's own flash after %s is not shown:\n%s", loc, p.Body.String())
	}
	// Another login's signature is not this one's.
	secret2, _, _ := identity.NewToken(identity.KindLoginCookie)
	if p := serve(u, "GET", loc, secret2, nil); strings.Contains(p.Body.String(), "X deleted") {
		t.Fatal("a flash signed for one login is shown to another")
	}
	// Signing out lands on /login with the known "signed out" note.
	w = serve(u, "POST", "/logout", f.cookie, url.Values{"csrf": {identity.CSRFToken(f.cookie)}})
	if p := serve(u, "GET", w.Header().Get("Location"), "", nil); !strings.Contains(p.Body.String(), "Signed out") {
		t.Fatalf("after sign-out %s: no note:\n%s", w.Header().Get("Location"), p.Body.String())
	}
}

// TestEditControlsFollowPermissions: the pages render edit controls by
// whoami's "can" (the API's permission rules), not by the role's name.
func TestEditControlsFollowPermissions(t *testing.T) {
	u, f := newFake(t, "admin") // an admin's name, but no permission
	if w := serve(u, "GET", "/credentials", f.cookie, nil); strings.Contains(w.Body.String(), `id="credential-form"`) {
		t.Error("the credential form is shown without manage_secrets")
	}
	f.role, f.can = "viewer", `{"manage_secrets":true,"manage_operators":true}`
	w := serve(u, "GET", "/credentials", f.cookie, nil)
	if !strings.Contains(w.Body.String(), `id="credential-form"`) || !strings.Contains(w.Body.String(), `id="nav-operators"`) {
		t.Error("manage_secrets and manage_operators do not show the credential form and the operators nav")
	}
	if w := serve(u, "GET", "/agents", f.cookie, nil); strings.Contains(w.Body.String(), `id="agent-form"`) {
		t.Error("the agent form is shown without manage_agents")
	}
}

// TestNewConcurrently: UIs made at once (every API Provision makes
// one, and config loads may overlap) share the parsed templates
// without a race (run with -race).
func TestNewConcurrently(t *testing.T) {
	done := make(chan *UI)
	for range 4 {
		go func() { done <- New(http.NotFoundHandler(), Options{}) }()
	}
	for range 4 {
		u := <-done
		if w := serve(u, "GET", "/login", "", nil); w.Code != http.StatusOK {
			t.Fatalf("GET /login: %d", w.Code)
		}
	}
}

// TestOverviewSaysWhatFailed: a count the API could not give is not
// shown as 0 but as unknown, with the API's reason.
func TestOverviewSaysWhatFailed(t *testing.T) {
	u, f := newFake(t, "viewer")
	f.fail = "/api/v1/credentials"
	body := serve(u, "GET", "/", f.cookie, nil).Body.String()
	if strings.Contains(body, "<b>0</b> credentials") || !strings.Contains(body, "<b>?</b> credentials") || !strings.Contains(body, "the state database is unreachable") {
		t.Fatalf("overview with the credentials list failing:\n%s", body)
	}
	if !strings.Contains(body, "<b>0</b> services") {
		t.Fatal("the other counts are not shown")
	}
}

// gatedAPI holds the overview's reads until maxParallelReads of them
// are in flight together, and records the most it saw at once.
type gatedAPI struct {
	*fakeAPI
	ctxKey   any
	mu       sync.Mutex
	inFlight int
	most     int
	open     chan struct{} // closed once maxParallelReads were in flight
	once     sync.Once
	foreign  atomic.Int64 // reads without the browser request's context
}

func (g *gatedAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/api/v1/whoami" {
		g.fakeAPI.ServeHTTP(w, r)
		return
	}
	if r.Context().Value(g.ctxKey) == nil {
		g.foreign.Add(1)
	}
	g.mu.Lock()
	g.inFlight++
	g.most = max(g.most, g.inFlight)
	if g.inFlight == maxParallelReads {
		g.once.Do(func() { close(g.open) })
	}
	g.mu.Unlock()
	// The deadline only bounds a failure (reads made one after another
	// never fill the gate); a passing run never waits for it.
	select {
	case <-g.open:
	case <-time.After(5 * time.Second):
	}
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	g.fakeAPI.ServeHTTP(w, r)
}

type ctxKey struct{}

// TestOverviewReadsAtOnce: the overview's reads run together, at most
// maxParallelReads at a time, each with the browser request's context.
func TestOverviewReadsAtOnce(t *testing.T) {
	_, f := newFake(t, "viewer")
	g := &gatedAPI{fakeAPI: f, ctxKey: ctxKey{}, open: make(chan struct{})}
	u := New(g, Options{})
	r := httptest.NewRequest("GET", "/", nil)
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, true))
	r.AddCookie(&http.Cookie{Name: identity.CookieName, Value: f.cookie})
	w := httptest.NewRecorder()
	u.ServeHTTP(w, r)
	if w.Code != 200 || !strings.Contains(w.Body.String(), "<b>0</b> services") {
		t.Fatalf("overview: %d\n%s", w.Code, w.Body.String())
	}
	select {
	case <-g.open:
	default:
		t.Fatalf("at most %d reads were in flight together, want %d", g.most, maxParallelReads)
	}
	if g.most > maxParallelReads {
		t.Errorf("%d reads in flight together, the bound is %d", g.most, maxParallelReads)
	}
	if n := f.calls.Load(); n != 8 {
		t.Errorf("%d reads, want the overview's 8", n)
	}
	if n := g.foreign.Load(); n != 0 {
		t.Errorf("%d reads without the browser request's context", n)
	}
}

// TestOverviewReadsStopWithTheBrowser: once the browser has gone, no
// read is started; the page does not hang.
func TestOverviewReadsStopWithTheBrowser(t *testing.T) {
	_, f := newFake(t, "viewer")
	ctx, cancel := context.WithCancel(context.Background())
	// whoami succeeds, then the browser goes away before the panels.
	u := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.ServeHTTP(w, r)
		if r.URL.Path == "/api/v1/whoami" {
			cancel()
		}
	}), Options{})
	r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
	r.AddCookie(&http.Cookie{Name: identity.CookieName, Value: f.cookie})
	u.ServeHTTP(httptest.NewRecorder(), r)
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d reads after the browser went away, want none", n)
	}
}

// TestOverviewPanelErrors: each failing read shows in its own panel;
// the rest of the page is there.
func TestOverviewPanelErrors(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/stores":   `<h2>Stores</h2>`,
		"/api/v1/activity": `Activity is not available: the state database is unreachable`,
		"/api/v1/sessions": `<b>?</b> active sessions`,
	} {
		u, f := newFake(t, "viewer")
		f.fail = path
		w := serve(u, "GET", "/", f.cookie, nil)
		body := w.Body.String()
		if w.Code != 200 || !strings.Contains(body, want) || !strings.Contains(body, "the state database is unreachable") ||
			!strings.Contains(body, "<b>0</b> credentials") || !strings.Contains(body, `id="stores-table"`) {
			t.Errorf("overview with %s failing: %d\n%s", path, w.Code, body)
		}
	}
}

// TestCredentialsShowTokenSources: a token source is listed with its
// kind, expiry, last refresh and last error (escaped), apart from the
// stored values; nothing but that metadata is shown, even when the
// API's answer carried more; the form says token sources are the API's.
func TestCredentialsShowTokenSources(t *testing.T) {
	u, f := newFake(t, "admin")
	f.can = `{"manage_secrets":true}`
	f.answers = map[string]string{"/api/v1/credentials": `{"credentials":[
		{"name":"GITHUB_TOKEN","store":"builtin","version":"3","updated_at":"2026-01-02T03:04:05Z","value":"ghp-stored-LEAK"},
		{"name":"GMAIL","store":"token_source","version":"0","updated_at":"2026-01-02T03:04:05Z","kind":"oauth2_refresh",
		 "expires_at":"2026-01-02T04:05:06Z","last_refresh":"2026-01-02T03:05:06Z","last_error":"token endpoint said <script>alert(1)</script>",
		 "access_token":"ya29-access-LEAK","refresh_token":"1//refresh-LEAK","value":"ya29-value-LEAK"},
		{"name":"GH_APP","store":"token_source","version":"0","updated_at":"2026-01-02T03:04:05Z","kind":"github_app"}]}`}
	body := serve(u, "GET", "/credentials", f.cookie, nil).Body.String()
	if strings.Contains(body, "LEAK") {
		t.Fatalf("the page shows a value the API's answer carried:\n%s", body)
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "token endpoint said &lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("the last error is missing or not escaped:\n%s", body)
	}
	plain, sources, ok := strings.Cut(body, `id="token-sources-table"`)
	if !ok {
		t.Fatalf("no token sources table:\n%s", body)
	}
	if !strings.Contains(plain, `data-name="GITHUB_TOKEN"`) || strings.Contains(plain, `data-name="GMAIL"`) || strings.Contains(sources, `data-name="GITHUB_TOKEN"`) {
		t.Fatalf("stored values and token sources are not apart:\n%s", body)
	}
	row := func(name string) string {
		_, r, _ := strings.Cut(sources, `<tr data-name="`+name+`"`)
		r, _, _ = strings.Cut(r, "</tr>")
		return r
	}
	for _, want := range []string{"oauth2_refresh", "2026-01-02 04:05:06Z", "2026-01-02 03:05:06Z", `value="delete"`} {
		if !strings.Contains(row("GMAIL"), want) {
			t.Errorf("the GMAIL row lacks %q: %s", want, row("GMAIL"))
		}
	}
	if r := row("GH_APP"); !strings.Contains(r, "github_app") || !strings.Contains(r, "not fetched yet") || !strings.Contains(r, "never") {
		t.Errorf("the GH_APP row (never fetched) should say github_app, not fetched yet and never: %s", r)
	}
	if !strings.Contains(body, "token source (API)") {
		t.Error("the page does not say token sources are defined through the API")
	}
	f.answers["/api/v1/credentials"] = `{"credentials":[{"name":"A","store":"builtin","version":"1","updated_at":"2026-01-02T03:04:05Z"}]}`
	if body := serve(u, "GET", "/credentials", f.cookie, nil).Body.String(); !strings.Contains(body, `data-name="A"`) || strings.Contains(body, `id="token-sources-table"`) {
		t.Errorf("with no token source the page should have no token sources table:\n%s", body)
	}
}
