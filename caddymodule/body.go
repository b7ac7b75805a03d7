package caddymodule

// Request bodies: placeholders swapped for their secrets under the
// rules of headers (resolvePlaceholder), a step of prepare after the
// headers, path and query.

import (
	"bytes"
	"io"
	"net/http"
	"slices"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// maxBufferedBody is the largest request body rewritten whole before
// anything is sent: a placeholder bound elsewhere in it is refused with
// nothing sent, and the new Content-Length is exact. A longer body (or
// one of unknown length that grows past it) is rewritten as it streams:
// a refusal then ends the upstream request mid-body (the upstream gets
// a truncated request, never the secret of another host), and a body
// that may change length (JSON, form, multipart, text) goes chunked.
const maxBufferedBody = 1 << 20

// rewriteBody swaps the placeholders of the request body (see
// services.BodyRewriter for what is swapped where and what is refused).
func (x *exchange) rewriteBody() error {
	r := x.r
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil
	}
	kind := services.BodyKindOf(r.Header)
	if kind != services.BodyOpaque && x.svc != nil && !x.svc.SwapsBodies() {
		kind = services.BodyOpaque // body_substitution false: refused if it carries one
	}
	if r.ContentLength > 0 && r.ContentLength <= maxBufferedBody {
		// The common case, a short body of known length: read whole,
		// rewritten in memory.
		// Grown as the bytes arrive, not allocated at the declared
		// length: a client that declares 1 MiB and sends nothing holds
		// nothing.
		data, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
		if err != nil {
			return err
		}
		if int64(len(data)) < r.ContentLength {
			return refused(http.StatusBadRequest, "the request body ended before its Content-Length")
		}
		out, written, err := services.RewriteBodyBytes(data, kind, x.resolveInBody)
		if err != nil {
			return err
		}
		x.secrets.AddWritten(written...)
		x.takeBodyCreds()
		r.Body.Close()
		r.Body, r.ContentLength, r.TransferEncoding = io.NopCloser(bytes.NewReader(out)), int64(len(out)), nil
		return nil
	}
	rw := services.NewBodyRewriter(r.Body, kind, x.resolveInBody)
	body := io.ReadCloser(&rewrittenBody{rw, r.Body})
	if r.ContentLength < 0 {
		head, err := io.ReadAll(io.LimitReader(rw, maxBufferedBody+1))
		if err != nil {
			return err
		}
		x.secrets.AddWritten(rw.Written()...)
		x.takeBodyCreds()
		if len(head) <= maxBufferedBody {
			r.Body.Close()
			r.Body, r.ContentLength, r.TransferEncoding = io.NopCloser(bytes.NewReader(head)), int64(len(head)), nil
			return nil
		}
		body = &rewrittenBody{io.MultiReader(bytes.NewReader(head), rw), r.Body}
	}
	r.Body = body
	if kind != services.BodyOpaque {
		// A swap may change the length: streamed without one.
		r.ContentLength, r.TransferEncoding = -1, nil
	}
	return nil
}

// rewrittenBody reads through the rewriter and closes the agent's body.
type rewrittenBody struct {
	io.Reader
	io.Closer
}

// resolveInBody is resolvePlaceholder for the body rewriter, which may
// run on the transport's goroutine: the same binding rule and the same
// freshness, but it touches nothing the request's goroutine reads
// unguarded. The value needs no registering for the scrubber: every
// credential of the session's scope is in its set already (scrubScope).
func (x *exchange) resolveInBody(ph string) (string, error) {
	cred, err := x.bind(ph)
	if err != nil {
		return "", err
	}
	v, err := x.creds.Resolve(x.r.Context(), cred, x.start)
	if err != nil {
		return "", err
	}
	_, isSource := x.creds.Source(cred)
	x.bodyMu.Lock()
	if !slices.Contains(x.bodyCreds, cred) {
		x.bodyCreds = append(x.bodyCreds, cred)
	}
	if isSource {
		if x.bodyTokens == nil {
			x.bodyTokens = map[string]string{}
		}
		x.bodyTokens[cred] = v
	}
	x.bodyMu.Unlock()
	return v, nil
}

// takeBodyCreds adds the credentials the body resolved so far to
// x.resolved (on the request's goroutine).
func (x *exchange) takeBodyCreds() {
	x.bodyMu.Lock()
	defer x.bodyMu.Unlock()
	for _, cred := range x.bodyCreds {
		if !slices.Contains(x.resolved, cred) {
			x.resolved = append(x.resolved, cred)
		}
	}
}
