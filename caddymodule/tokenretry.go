package caddymodule

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
)

// eachToken calls fn with every token the exchange's request carried
// (head and body) and the Source that minted it.
func (x *exchange) eachToken(fn func(src *tokensource.Source, tok string)) {
	x.bodyMu.Lock()
	defer x.bodyMu.Unlock()
	for _, m := range []map[string]string{x.tokens, x.bodyTokens} {
		for name, tok := range m {
			if src, ok := x.creds.Source(name); ok {
				fn(src, tok)
			}
		}
	}
}

// tokenRetry is the upstream transport's one rule for credentials that
// mint tokens: a 401 to a request that carried a token (in its head or
// its body) marks that token stale (the next request refreshes first),
// and an idempotent request without a body is sent once more with the
// new token. Never more than once: the retry goes to the bare
// transport.
type tokenRetry struct {
	base http.RoundTripper
	p    *Proxy
}

// retryable reports whether req may be sent twice: an idempotent
// method (RFC 9110 §9.2.2) and no body. A POST or PATCH never is, even
// bodiless: the upstream may have acted on it before answering 401.
func retryable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return req.Body == nil || req.Body == http.NoBody
	}
	return false
}

func (t tokenRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	x, ok := req.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return resp, nil
	}
	if resp.StatusCode != http.StatusUnauthorized {
		// Accepted (or refused for another reason): the token works, so
		// the next 401 refreshes at once again.
		x.eachToken(func(src *tokensource.Source, tok string) { src.MarkAccepted(tok) })
		return resp, nil
	}
	// Tokens the body rewriter injected are only marked: a request
	// with a body is never sent again.
	x.bodyMu.Lock()
	for name, tok := range x.bodyTokens {
		if src, ok := x.creds.Source(name); ok {
			src.MarkStale(tok)
		}
	}
	x.bodyMu.Unlock()
	if len(x.tokens) == 0 {
		return resp, nil
	}
	retry := retryable(req)
	out := req.Clone(req.Context())
	swapped := false
	for name, old := range x.tokens {
		src, ok := x.creds.Source(name)
		if !ok {
			continue
		}
		src.MarkStale(old) // false when another request marked it first
		if !retry {
			continue
		}
		tok, _, err := src.Token(req.Context())
		if err != nil || tok == old || !replaceToken(out, old, tok) {
			continue
		}
		standIn, ok := x.sess.Placeholder(name)
		if !ok {
			standIn = scrub.Redacted
		}
		x.secrets.Add(tok, standIn)
		x.tokens[name] = tok
		swapped = true
	}
	if !swapped {
		return resp, nil
	}
	// The new token is scrubbed from the answer too.
	x.redactor = t.p.redactors.Redactor(&x.secrets)
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return t.base.RoundTrip(out)
}

// replaceToken writes tok where r carries old: headers as is, the
// query and the escaped path escaped the way injection wrote them
// (url.QueryEscape, url.PathEscape). It reports whether it found old
// anywhere.
func replaceToken(r *http.Request, old, tok string) bool {
	found := false
	for k, vs := range r.Header {
		for i, v := range vs {
			if strings.Contains(v, old) {
				r.Header[k][i] = strings.ReplaceAll(v, old, tok)
				found = true
			}
		}
	}
	u := *r.URL
	if eo := url.QueryEscape(old); strings.Contains(u.RawQuery, eo) {
		u.RawQuery, found = strings.ReplaceAll(u.RawQuery, eo, url.QueryEscape(tok)), true
	}
	if strings.Contains(u.Path, old) {
		u.Path, found = strings.ReplaceAll(u.Path, old, tok), true
		if u.RawPath != "" {
			u.RawPath = strings.ReplaceAll(u.RawPath, url.PathEscape(old), url.PathEscape(tok))
		}
	}
	r.URL = &u
	return found
}
