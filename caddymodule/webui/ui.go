package webui

import (
	"embed"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configures the UI.
type Options struct {
	// ProxyURL is the proxy agents use, shown in the av-launch snippet;
	// empty leaves it out.
	ProxyURL string
}

// UI serves the pages. Every read and write is a request to api, the
// management API's own handler (its mux), made in-process.
type UI struct {
	api    http.Handler
	opts   Options
	pages  map[string]pageFunc
	static http.Handler
}

// pageFunc serves one page for a signed-in operator: GET renders, POST
// (CSRF already checked) acts and redirects.
type pageFunc func(*call)

// csp is the Content-Security-Policy of every UI answer: only this
// server's own script, style and connections, no frames, no inline
// anything.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// New is the UI over api, the management API's handler.
func New(api http.Handler, opts Options) *UI {
	u := &UI{api: api, opts: opts}
	u.pages = map[string]pageFunc{
		"/":            u.overview,
		"/credentials": u.credentials,
		"/services":    u.services,
		"/sessions":    u.sessions,
		"/activity":    u.activity,
		"/agents":      u.agents,
		"/requests":    u.requests,
		"/operators":   u.operators,
		"/audit":       u.audit,
		"/ca":          u.ca,
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	u.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	pageTemplates() // parse errors show at startup, not on a page
	return u
}

// ServeHTTP serves a page, the login page, logout or a static file,
// with the security headers on every answer. A POST is checked for its
// CSRF token before anything else; a signed-out visit to a page goes
// to /login.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if strings.HasPrefix(r.URL.Path, "/static/") {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") {
			u.plainError(w, http.StatusNotFound, "no such file") // no directory listings
			return
		}
		h.Set("Cache-Control", "public, max-age=3600")
		u.static.ServeHTTP(w, r)
		return
	}
	h.Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case "/login":
		u.login(w, r)
		return
	case "/logout":
		u.logout(w, r)
		return
	}
	page, ok := u.pages[r.URL.Path]
	if !ok {
		u.plainError(w, http.StatusNotFound, "no such page")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		h.Set("Allow", "GET, HEAD, POST")
		u.plainError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	c := u.newCall(w, r)
	if r.Method == http.MethodPost && !c.checkForm() {
		return
	}
	if !c.signIn() {
		return
	}
	page(c)
}

// toLogin redirects a signed-out visit to /login, to come back after.
func toLogin(w http.ResponseWriter, r *http.Request) {
	target := "/login"
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		target += "?next=" + url.QueryEscape(r.URL.Path)
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// localPath returns next when it is a path of this server ("/x", not
// "//host" or "/\host" or a URL), else "/".
func localPath(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") {
		return "/"
	}
	if p, err := url.Parse(next); err != nil || p.Host != "" || p.Scheme != "" {
		return "/"
	}
	return next
}

// plainError answers a short text page (no template needed).
func (u *UI) plainError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}

// Interface guard
var _ http.Handler = (*UI)(nil)
