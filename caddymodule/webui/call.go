package webui

// One browser request and the in-process API requests made for it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
)

// maxForm bounds a form body.
const maxForm = 1 << 20

// call is one browser request to a page.
type call struct {
	u *UI
	w http.ResponseWriter
	r *http.Request
	// secret is the login cookie's secret ("" when there is none).
	secret string
	// csrf is the token of secret, for the pages' forms.
	csrf string
	// me is the signed-in principal (signIn).
	me apiwire.Whoami
	// headerMu guards w's header: reads running at once (getAll) may
	// each pass on a Set-Cookie of the API.
	headerMu sync.Mutex
}

func (u *UI) newCall(w http.ResponseWriter, r *http.Request) *call {
	c := &call{u: u, w: w, r: r}
	if r.Header.Get("Authorization") == "" {
		if tok, fromCookie, err := identity.RequestToken(r); err == nil && fromCookie {
			c.secret, c.csrf = tok, identity.CSRFToken(tok)
		}
	}
	return c
}

// checkForm parses a POSTed form and checks its csrf field (before
// anything else is done with the request): 403 when missing or wrong.
func (c *call) checkForm() bool {
	c.r.Body = http.MaxBytesReader(c.w, c.r.Body, maxForm)
	if err := c.r.ParseForm(); err != nil {
		c.u.plainError(c.w, http.StatusBadRequest, "cannot read the form")
		return false
	}
	if len(c.r.PostForm["csrf"]) != 1 || !identity.ValidCSRF(c.secret, c.r.PostForm.Get("csrf")) {
		c.u.plainError(c.w, http.StatusForbidden, "refused: the form's CSRF token is missing or wrong (reload the page and try again)")
		return false
	}
	return true
}

// signIn finds who the cookie signs in (GET /api/v1/whoami); signed
// out, the browser goes to /login.
func (c *call) signIn() bool {
	if c.secret == "" {
		toLogin(c.w, c.r)
		return false
	}
	if err := c.get("/api/v1/whoami", &c.me); err != nil {
		if e, ok := err.(*apiErr); ok && e.status == http.StatusUnauthorized {
			toLogin(c.w, c.r)
			return false
		}
		c.u.plainError(c.w, http.StatusServiceUnavailable, "the management API cannot say who you are: "+err.Error())
		return false
	}
	return true
}

// apiErr is an error answer of the API.
type apiErr struct {
	status int
	msg    string
	// retryAfter is the answer's Retry-After ("" when none).
	retryAfter string
}

func (e *apiErr) Error() string { return fmt.Sprintf("%s (%d)", e.msg, e.status) }

// get reads path from the API into out.
func (c *call) get(path string, out any) error {
	_, err := c.do(http.MethodGet, path, nil, out)
	return err
}

// maxParallelReads bounds the API requests one page view has in flight
// at once (getAll): the overview's panels are read together rather than
// in turn, but a single page view cannot take more of the API (and of
// its database pool) than this.
const maxParallelReads = 4

// read is one GET of getAll: path decoded into out, and its outcome.
type read struct {
	path string
	out  any
	// err is set by getAll: the read's own failure, nil on success.
	err error
}

// getAll runs the reads at once, at most maxParallelReads in flight,
// each with the browser request's context, and returns when all are
// done; each read's err says how it went, so one failure spoils only
// its own panel. A read not started when the browser goes away fails
// with the context's error. A panic in a read is raised again in the
// caller's goroutine, once all are done, where the HTTP server's own
// recovery sees it as it would a sequential read's.
func (c *call) getAll(reads ...*read) {
	ctx := c.r.Context()
	slots := make(chan struct{}, maxParallelReads)
	var wg sync.WaitGroup
	var panicked sync.Once
	var panicValue any
	for _, rd := range reads {
		// Checked first: select picks at random between a free slot
		// and a done context.
		if ctx.Err() != nil {
			rd.err = ctx.Err()
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			rd.err = ctx.Err()
			continue
		}
		wg.Go(func() {
			defer func() {
				<-slots
				if p := recover(); p != nil {
					panicked.Do(func() { panicValue = p })
				}
			}()
			rd.err = c.get(rd.path, rd.out)
		})
	}
	wg.Wait()
	if panicValue != nil {
		panic(panicValue)
	}
}

// do sends one request to the API in-process, as the browser: its
// login cookie, its address, its Origin and Sec-Fetch-Site (the API's
// same-origin rule applies), and for a change the CSRF header. A JSON
// answer is decoded into out (nil: ignored); an error answer is an
// *apiErr.
func (c *call) do(method, path string, body, out any) (int, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(c.r.Context(), method, path, rd)
	if err != nil {
		return 0, err
	}
	req.Host, req.RemoteAddr, req.TLS = c.r.Host, c.r.RemoteAddr, c.r.TLS
	if c.secret != "" {
		req.Header.Set("Cookie", identity.LoginCookieName(c.r.TLS != nil)+"="+c.secret)
	}
	for _, h := range []string{"Origin", "Sec-Fetch-Site", "User-Agent"} {
		if v := c.r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	if method != http.MethodGet {
		req.Header.Set(identity.CSRFHeader, c.csrf)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := newRecorder()
	c.u.api.ServeHTTP(rec, req)
	// Set-Cookie of the API (a logout clears the cookie) reaches the
	// browser.
	if cookies := rec.header.Values("Set-Cookie"); len(cookies) > 0 {
		c.headerMu.Lock()
		for _, sc := range cookies {
			c.w.Header().Add("Set-Cookie", sc)
		}
		c.headerMu.Unlock()
	}
	if rec.status >= 400 {
		var e apiwire.Error
		if json.Unmarshal(rec.body.Bytes(), &e) != nil || e.Error == "" {
			e.Error = http.StatusText(rec.status)
		}
		return rec.status, &apiErr{status: rec.status, msg: e.Error, retryAfter: rec.header.Get("Retry-After")}
	}
	if out != nil && rec.body.Len() > 0 {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return rec.status, fmt.Errorf("the API's answer to %s %s cannot be read", method, path)
		}
	}
	return rec.status, nil
}

// done redirects back to the page after a write (POST-redirect-GET),
// with a one-line flash signed for this login (flash.go): err's text,
// or ok.
func (c *call) done(err error, ok string) {
	q := flashQuery(c.csrf, "ok", ok)
	if err != nil {
		q = flashQuery(c.csrf, "error", oneLine(errText(err)))
	}
	http.Redirect(c.w, c.r, c.r.URL.Path+"?"+q.Encode(), http.StatusSeeOther)
}

// errText is what the operator is told of err.
func errText(err error) string {
	if e, ok := err.(*apiErr); ok {
		return e.msg
	}
	return err.Error()
}

// recorder is the response writer of an in-process API request.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}
