package e2etest

// The browser harness of the web UI journeys (webui_*_test.go): Debian's
// chromium, headless, driven over the DevTools protocol (chromedp), one
// browser per test. Every page the harness reads is checked for every
// secret registered with it, so a journey cannot show a credential
// value, the admin token or an agent token without failing.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/agentvault/caddy-agent-vault/internal/syncbuf"
	"github.com/agentvault/caddy-agent-vault/internal/testenv"
)

// screenshotsEnv names the directory the journeys save their
// screenshots in (make screenshots: docs/); unset, none are taken.
const screenshotsEnv = "AGENT_VAULT_SCREENSHOTS"

// browserStep bounds one browser action (a navigation, a wait for a
// selector): generous for a loaded 2-core CI machine, short enough that
// a missing element fails the test quickly.
const browserStep = 15 * time.Second

// browser is one headless chromium and the tab the journey drives.
type browser struct {
	t    testing.TB
	ctx  context.Context // the tab
	base string          // http://127.0.0.1:port of the management API
	out  *syncbuf.Buffer // chromium's own output, shown when a step fails

	mu      sync.Mutex
	secrets map[string]string // value -> what it is (for the failure message)
}

// chromiumPath is Debian's chromium; missing, the test skips, or fails
// under the strict run (make deps installs it).
func chromiumPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Unavailable(t, "the web UI journeys need Debian's chromium (apt-get install chromium; make deps): %v", err)
	}
	return p
}

// newBrowser starts chromium against base (the management API's
// http://host:port) with a fresh profile; it is closed when t ends.
func newBrowser(t testing.TB, base string) *browser {
	t.Helper()
	exe := chromiumPath(t)
	out := &syncbuf.Buffer{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // as root in a container
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), // else it floods the closed network
		chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("no-proxy-server", true),       // loopback only, whatever the environment says
		chromedp.Flag("disable-dev-shm-usage", true), // a container's /dev/shm is small
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(out),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx, base: strings.TrimSuffix(base, "/"), out: out, secrets: map[string]string{}}
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// Start the browser now (without a timeout: the context of the
	// first Run owns the browser), so a chromium that cannot run fails
	// here with its own output rather than in the first journey step.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("starting chromium: %v\nchromium output:\n%s", err, chromiumTail(out, 4000))
	}
	return b
}

// secret registers values no page may contain (credential values,
// tokens, passwords); what names them in failure messages.
func (b *browser) secret(what string, values ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range values {
		if v != "" {
			b.secrets[v] = what
		}
	}
}

// forget unregisters a value (a secret that has been revoked and may
// now appear, which none of the journeys needs so far).
func (b *browser) forget(value string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.secrets, value)
}

// run runs actions on the tab within browserStep, failing t with what
// and chromium's output on error.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	get(b, what, chromedp.Steps(actions...))
}

// get runs one action that returns a value, as run does.
func get[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStep)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %s: %v\nchromium output:\n%s", what, err, chromiumTail(b.out, 4000))
	}
	return v
}

// navigate runs actions that load a page (a navigation, a click on a
// submit button) and returns the final document's HTTP status.
func (b *browser) navigate(what string, actions ...chromedp.Action[chromedp.Void]) int {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStep)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, actions...)
	if err != nil {
		b.t.Fatalf("browser: %s: %v\nchromium output:\n%s", what, err, chromiumTail(b.out, 4000))
	}
	if resp == nil {
		b.t.Fatalf("browser: %s: no document loaded", what)
	}
	return int(resp.Status)
}

// visit loads path and returns the page's HTML (checked for secrets).
// It fails unless the final document answered 200.
func (b *browser) visit(path string) string {
	b.t.Helper()
	if st := b.navigate("GET "+path, chromedp.Navigate(b.base+path)); st != http.StatusOK {
		b.t.Fatalf("GET %s in the browser: status %d\n%s", path, st, b.rawHTML())
	}
	return b.html()
}

// visitStatus loads path and returns its status and HTML (checked).
func (b *browser) visitStatus(path string) (int, string) {
	b.t.Helper()
	st := b.navigate("GET "+path, chromedp.Navigate(b.base+path))
	return st, b.html()
}

// html is the current page's outerHTML, failing t if it holds a
// registered secret.
func (b *browser) html() string {
	b.t.Helper()
	h := b.rawHTML()
	b.checkSecrets(b.location(), h, nil)
	return h
}

// htmlAllowingOnce is html for the one page that shows a secret once
// (the agent-creation result): it must hold allowed exactly once and no
// other registered secret.
func (b *browser) htmlAllowingOnce(allowed string) string {
	b.t.Helper()
	h := b.rawHTML()
	if n := strings.Count(h, allowed); n != 1 {
		b.t.Fatalf("%s shows the one-time secret %d times, want exactly once", b.location(), n)
	}
	b.checkSecrets(b.location(), h, map[string]bool{allowed: true})
	return h
}

func (b *browser) rawHTML() string {
	b.t.Helper()
	// Evaluated, not queried: a DOM node id can belong to the document
	// a navigation just replaced.
	return get(b, "reading the page", chromedp.Evaluate[string]("document.documentElement.outerHTML"))
}

// location is the current page's URL path and query.
func (b *browser) location() string {
	b.t.Helper()
	return strings.TrimPrefix(get(b, "reading the location", chromedp.Location()), b.base)
}

func (b *browser) checkSecrets(where, html string, allowed map[string]bool) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for v, what := range b.secrets {
		if !allowed[v] && strings.Contains(html, v) {
			b.t.Errorf("page %s contains a secret: %s (%.6s...)", where, what, v)
		}
	}
}

// fill sets form fields by CSS selector (inputs, textareas, selects).
func (b *browser) fill(fields map[string]string) {
	b.t.Helper()
	var actions []chromedp.Action[chromedp.Void]
	for sel, v := range fields {
		actions = append(actions, chromedp.SetValue(chromedp.CSS(sel), v))
	}
	b.run(fmt.Sprintf("filling %v", keys(fields)), actions...)
}

// submit clicks sel (a submit button) and waits for the page the form
// leads to (after the POST-redirect-GET); it returns that page's status.
func (b *browser) submit(sel string) int {
	b.t.Helper()
	return b.navigate("submitting "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// waitFor waits until sel matches a visible element.
func (b *browser) waitFor(sel string) {
	b.t.Helper()
	b.run("waiting for "+sel, chromedp.WaitVisible(chromedp.CSS(sel)))
}

// waitText waits until the element sel holds substr, within d, without
// reloading the page: the browser's own updates (the live activity view)
// must bring it. It returns the element's HTML (checked for secrets).
func (b *browser) waitText(sel, substr string, d time.Duration) string {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for {
		h := get(b, "reading "+sel, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.outerHTML : ""; })()`, sel)))
		b.checkSecrets(b.location()+" "+sel, h, nil)
		if strings.Contains(h, substr) {
			return h
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s did not show %q within %v; it holds:\n%s", sel, substr, d, h)
		}
		<-time.After(100 * time.Millisecond)
	}
}

// attr is the value of attribute name of the first element sel.
func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	r := get(b, "reading "+sel+"["+name+"]", chromedp.AttributeValue(chromedp.CSS(sel), name))
	if !r.Exists {
		b.t.Fatalf("%s has no attribute %s", sel, name)
	}
	return r.Value
}

// mark sets an attribute on <body> through DevTools (no page script
// runs): it survives the page's own DOM updates but not a reload, which
// is how a journey proves that something appeared without one.
func (b *browser) mark(value string) {
	b.t.Helper()
	b.run("marking the page", chromedp.SetAttributeValue(chromedp.CSS("body"), "data-e2e-mark", value))
}

// marked reports whether <body> still carries mark's value.
func (b *browser) marked(value string) bool {
	b.t.Helper()
	r := get(b, "reading the mark", chromedp.AttributeValue(chromedp.CSS("body"), "data-e2e-mark"))
	return r.Exists && r.Value == value
}

// count is the number of elements matching sel now (no waiting).
func (b *browser) count(sel string) int {
	b.t.Helper()
	return get(b, "counting "+sel, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// cookie is the value of the browser's cookie name for the API's origin.
func (b *browser) cookie(name string) string {
	b.t.Helper()
	r := get(b, "reading cookies", func(ctx context.Context, t *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base}})
	})
	for _, c := range r.Cookies {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// clearCookies signs the browser out without the UI (a fresh start).
func (b *browser) clearCookies() {
	b.t.Helper()
	b.run("clearing cookies", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, network.ClearBrowserCookies, cdp.Empty{})
		return err
	}))
}

// screenshot saves the viewport (1280x800) as $AGENT_VAULT_SCREENSHOTS/
// name.png when that variable is set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv(screenshotsEnv)
	if dir == "" {
		return
	}
	png := get(b, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// chromiumTail is the last n bytes of chromium's output without its
// complaints about the missing D-Bus (a container has none; they say
// nothing).
func chromiumTail(out *syncbuf.Buffer, n int) string {
	var kept []string
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.Contains(line, "dbus/") {
			kept = append(kept, line)
		}
	}
	s := strings.Join(kept, "\n")
	return s[max(0, len(s)-n):]
}

// TestBrowserHarness proves the harness against a page of its own (no
// agent-vault): chromium starts with the flags above, pages load,
// forms fill and submit, a registered secret on a page fails the check,
// and screenshots are PNGs of the viewport.
func TestBrowserHarness(t *testing.T) {
	srv := newHarnessPage(t)
	b := newBrowser(t, srv)
	b.secret("the test secret", "s3cr3t-value-never-shown")

	h := b.visit("/form")
	mustContain(t, "form page", h, `<form method="post" action="/form">`)
	b.fill(map[string]string{`input[name="who"]`: "chromium"})
	if st := b.submit(`button[type="submit"]`); st != http.StatusOK {
		t.Fatalf("submitting: %d", st)
	}
	mustContain(t, "after POST-redirect-GET", b.html(), "hello chromium")
	if !strings.HasSuffix(b.location(), "/done?who=chromium") {
		t.Fatalf("after submit at %s", b.location())
	}

	// The secret check reports a page that shows a secret.
	rec := &recordingTB{TB: t}
	leaky := &browser{t: rec, ctx: b.ctx, base: b.base, out: b.out, secrets: b.secrets}
	leaky.visit("/leak")
	if !rec.failed {
		t.Fatal("a page showing a registered secret passed the check")
	}

	// Marks survive DOM updates but not a reload.
	b.visit("/form")
	b.mark("m1")
	if !b.marked("m1") {
		t.Fatal("mark not set")
	}
	b.visit("/form")
	if b.marked("m1") {
		t.Fatal("mark survived a reload")
	}

	// DevTools evaluation works under the UI's strict CSP (the helpers
	// that read tables and send forged posts rely on it).
	b.visit("/table")
	if got := b.cells("tr", "beta"); !slices.Equal(got, []string{"beta", "2"}) {
		t.Fatalf("cells(beta) = %q", got)
	}
	if got := b.rows("td:first-child"); !slices.Equal(got, []string{"alpha", "beta"}) {
		t.Fatalf("rows = %q", got)
	}
	if n := b.count("tr"); n != 2 {
		t.Fatalf("count(tr) = %d", n)
	}
	if st, final := b.fetchPost("/forbidden", url.Values{"a": {"b"}}, true); st != http.StatusForbidden || final != "/forbidden" {
		t.Fatalf("fetchPost = %d %s, want 403 /forbidden", st, final)
	}

	dir := t.TempDir()
	t.Setenv(screenshotsEnv, dir)
	b.screenshot("harness")
	png, err := os.ReadFile(filepath.Join(dir, "harness.png"))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot: %v %.8q", err, png)
	}
}

// recordingTB records Errorf/Fatalf instead of failing the test.
type recordingTB struct {
	testing.TB
	failed bool
}

func (r *recordingTB) Helper()               {}
func (r *recordingTB) Errorf(string, ...any) { r.failed = true }
func (r *recordingTB) Fatalf(f string, a ...any) {
	r.failed = true
	r.TB.Fatalf(f, a...)
}

// newHarnessPage serves the harness test's pages on loopback.
func newHarnessPage(t *testing.T) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><html><body><form method="post" action="/form"><input name="who"><button type="submit">go</button></form></body></html>`)
	})
	mux.HandleFunc("POST /form", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/done?who="+r.FormValue("who"), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><html><body><p>hello %s</p></body></html>`, r.FormValue("who"))
	})
	mux.HandleFunc("GET /table", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		fmt.Fprint(w, `<!doctype html><html><head><meta name="csrf-token" content="tok"></head><body><table><tr><td>alpha</td><td>1</td></tr><tr><td>beta</td><td>2</td></tr></table></body></html>`)
	})
	mux.HandleFunc("POST /forbidden", func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("csrf") != "tok" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusForbidden)
	})
	mux.HandleFunc("GET /leak", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><html><body><p>s3cr3t-value-never-shown</p></body></html>`)
	})
	srv := &http.Server{Handler: mux}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
