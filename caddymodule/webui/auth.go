package webui

// Signing in and out.

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

type loginData struct {
	Next  string
	Error string
}

// login shows the sign-in forms (GET) or signs in (POST): a name and
// password, or the admin token, sent to POST /api/v1/login, whose
// cookie becomes the browser's. There is no login yet to derive a
// CSRF token from: the API's own login-CSRF rule (CheckLoginRequest,
// on the browser's Origin and Sec-Fetch-Site, which do passes on)
// decides, and its answer's status is the page's.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	c := u.newCall(w, r)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		c.render("login", "Sign in", loginData{Next: localPath(r.URL.Query().Get("next"))})
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		u.plainError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		u.plainError(w, http.StatusBadRequest, "cannot read the form")
		return
	}
	next := localPath(r.PostForm.Get("next"))
	var body any = apiwire.LoginRequest{Name: r.PostForm.Get("name"), Password: r.PostForm.Get("password")}
	if tok := r.PostForm.Get("admin_token"); tok != "" {
		body = apiwire.LoginRequest{AdminToken: tok}
	}
	c.secret = "" // a sign-in starts from no login
	if _, err := c.do(http.MethodPost, "/api/v1/login", body, nil); err != nil {
		// The API's status (401, 403, 429, 503) and Retry-After.
		status := http.StatusServiceUnavailable
		if e, ok := err.(*apiErr); ok {
			status = e.status
			if e.retryAfter != "" {
				w.Header().Set("Retry-After", e.retryAfter)
			}
		}
		c.renderStatus(status, "login", "Sign in", loginData{Next: next, Error: errText(err)})
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the login (POST /api/v1/logout) and clears the cookie.
func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		u.plainError(w, http.StatusMethodNotAllowed, "sign out with the Sign out button (POST)")
		return
	}
	c := u.newCall(w, r)
	if !c.checkForm() {
		return
	}
	if _, err := c.do(http.MethodPost, "/api/v1/logout", nil, nil); err != nil {
		c.done(err, "")
		return
	}
	http.Redirect(w, r, "/login?ok=signed-out", http.StatusSeeOther)
}
