package caddymodule

import (
	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"io"
	"net/http"
	"strings"
)

// tokenRetry is the upstream transport's one rule for credentials that
// mint tokens: a 401 to a request that carried a token marks that
// token stale (the next request refreshes first), and a request without
// a body is sent once more with the new token. Never more than once:
// the retry goes to the bare transport.
type tokenRetry struct {
	base http.RoundTripper
	p    *Proxy
}

func (t tokenRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	x, ok := req.Context().Value(exchangeKey{}).(*exchange)
	if !ok || len(x.tokens) == 0 {
		return resp, nil
	}
	bodiless := req.Body == nil || req.Body == http.NoBody
	out := req.Clone(req.Context())
	swapped := false
	for name, old := range x.tokens {
		src, ok := x.creds.Source(name)
		if !ok {
			continue
		}
		src.MarkStale(old) // false when another request marked it first
		if !bodiless {
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

// replaceToken writes tok where r carries old (headers, path, query);
// it reports whether it found old anywhere.
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
	if strings.Contains(u.RawQuery, old) {
		u.RawQuery, found = strings.ReplaceAll(u.RawQuery, old, tok), true
	}
	if strings.Contains(u.Path, old) {
		u.Path, u.RawPath, found = strings.ReplaceAll(u.Path, old, tok), strings.ReplaceAll(u.RawPath, old, tok), true
	}
	r.URL = &u
	return found
}
