package caddymodule

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

// exchange is one proxied request on its way through the pipeline; each
// step reads what the earlier ones decided.
type exchange struct {
	r      *http.Request
	sess   *sessions.Session
	target target
	start  time.Time
	// path is the escaped path as the agent sent it, for matching and
	// logs: after rewriting, the request's own path may hold a secret.
	path string

	svc *services.Compiled // nil: an uncovered host relayed under `unmatched tunnel`
	// creds is one snapshot for the whole request, so the value sent
	// and the value scrubbed from the answer are the same even while a
	// store rotates.
	creds *credentials.Snapshot
	// secrets is every form of every secret sent and of every other
	// credential in the session's scope; redactor is built from it
	// before the request leaves (nil: the session can reach no secret).
	secrets  scrub.SecretSet
	redactor *scrub.Redactor
	resolved []string // names of the credentials the request resolved
	// tokens are the access tokens of token sources the request sends,
	// by credential name (tokenRetry marks them stale on a 401).
	tokens map[string]string
	// bodyCreds are the credentials the body rewriter resolved: it may
	// run on the transport's goroutine while the answer is relayed.
	bodyMu    sync.Mutex
	bodyCreds []string
	// bodyTokens are the access tokens the body rewriter injected, by
	// credential name (guarded by bodyMu; tokenRetry marks them).
	bodyTokens map[string]string
	refusal    string // why it was refused or failed, for the log line
	code       string // the activity log's code of the refusal or failure
}

// forward is the path of one proxied request. Every step before send
// may refuse it, and then nothing reaches the upstream.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, sess *sessions.Session, tgt target) {
	// Deferred first, so it runs last: once the entry is handed over.
	p.deps.exchanges.begin()
	defer p.deps.exchanges.end()
	if !tgt.tls {
		// An absolute-form request is not inside a tracked tunnel: the
		// session tracks the request itself, so that ending the session
		// ends a stream or an upgraded connection it carries too.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer sess.Track(&requestCloser{cancel})()
		r = r.WithContext(ctx)
	}
	x := &exchange{r: r, sess: sess, target: tgt, start: time.Now(), path: r.URL.EscapedPath()}
	rec := &statusRecorder{ResponseWriter: w, x: x}
	defer p.logExchange(x, rec)
	release, err := p.acquireSlot(x)
	if err != nil {
		p.refuse(rec, x, err)
		return
	}
	defer release()
	if err := p.prepare(x); err != nil {
		p.refuse(rec, x, err)
		return
	}
	p.send(rec, x)
}

// requestCloser lets a session end a request by cancelling its context
// (a pointer: sessions keep what they track in a map).
type requestCloser struct{ cancel context.CancelFunc }

func (c *requestCloser) Close() error { c.cancel(); return nil }

// prepare runs the request side of the pipeline in order.
func (p *Proxy) prepare(x *exchange) error {
	if err := authorize(x); err != nil {
		return err
	}
	if err := p.match(x); err != nil {
		return err
	}
	if err := p.checkRules(x); err != nil {
		return err
	}
	x.creds = p.deps.creds.Snapshot()
	x.scrubScope()
	if err := x.checkUpgrade(); err != nil {
		return err
	}
	if err := x.rewritePlaceholders(); err != nil {
		return err
	}
	if err := x.rewriteBody(); err != nil {
		return err
	}
	if err := x.inject(); err != nil {
		return err
	}
	x.redactor = p.redactors.Redactor(&x.secrets)
	return nil
}

// authorize refuses a session that ended while its tunnel was open.
func authorize(x *exchange) error {
	if !x.sess.Active(x.start) {
		return refused(http.StatusForbidden, "session revoked or expired").as(activity.CodeSessionEnded)
	}
	return nil
}

// match finds the in-scope service for the request. Only an
// absolute-form http:// request that no in-scope service matches, under
// `unmatched tunnel`, goes on without one (and then nothing is injected
// and every placeholder is refused).
func (p *Proxy) match(x *exchange) error {
	t := x.target
	svc, ok := p.deps.services.Services().Lookup(t.host, t.port, t.tls, x.path, x.sess.InScope)
	switch {
	case ok:
		x.svc = svc
	case t.tls || p.Unmatched != UnmatchedTunnel:
		return uncoveredHost(t, t.String()+x.path, "", x.sess)
	}
	if x.svc != nil && x.svc.Injects() && !x.cleartextOK() {
		return refused(http.StatusForbidden, "service %s injects a credential and does not allow cleartext http; use https", x.svc.Service.Name).as(activity.CodeCleartext)
	}
	return nil
}

// cleartextOK reports whether a secret may travel to this target.
func (x *exchange) cleartextOK() bool {
	return x.target.tls || (x.svc != nil && x.svc.Service.AllowCleartext)
}

// rewritePlaceholders swaps the session's placeholders for their
// secrets, each only toward a service that uses that credential.
func (x *exchange) rewritePlaceholders() error {
	written, err := services.RewriteRequest(x.r, x.resolvePlaceholder)
	x.secrets.AddWritten(written...)
	return err
}

// resolvePlaceholder is the binding rule: a placeholder becomes its
// secret only if it is this session's, the matched service uses its
// credential, and the secret would not travel in cleartext.
func (x *exchange) resolvePlaceholder(ph string) (string, error) {
	cred, err := x.bind(ph)
	if err != nil {
		return "", err
	}
	return x.secret(cred)
}

// bind is the binding rule's decision: the credential ph stands for,
// or the refusal.
func (x *exchange) bind(ph string) (string, error) {
	cred, known := x.sess.Credential(ph)
	switch {
	case !known:
		return "", refused(http.StatusForbidden, "the request carries a placeholder that does not belong to this session").as(activity.CodePlaceholder)
	case x.svc == nil || !x.svc.Uses(cred):
		return "", refused(http.StatusForbidden, "credential %s is not bound to %s in this session", cred, x.target).as(activity.CodePlaceholder)
	case !x.cleartextOK():
		return "", refused(http.StatusForbidden, "credential %s would be sent over cleartext http", cred).as(activity.CodeCleartext)
	}
	return cred, nil
}

// inject writes the matched service's auth.
func (x *exchange) inject() error {
	if x.svc == nil {
		return nil
	}
	written, err := x.svc.Inject(x.r, x.secret)
	x.secrets.AddWritten(written...)
	return err
}

// checkUpgrade refuses a switch to a protocol whose stream the proxy
// cannot scan, when the answer must be scanned (the session can reach a
// secret: one this request is about to send, or one an upstream stored
// earlier and could return over the raw connection). WebSocket, and
// what the matched service lists in allow_upgrades, go on.
func (x *exchange) checkUpgrade() error {
	if x.secrets.Empty() {
		return nil
	}
	for _, proto := range services.Upgrades(x.r.Header) {
		switch {
		case x.svc.AllowsUpgrade(proto):
		case x.svc == nil:
			return refused(http.StatusForbidden, "switching to %q is refused: no service covers %s, this session can reach credentials, and the proxy cannot scan that stream",
				proto, x.target).as(activity.CodeUpgrade)
		default:
			return refused(http.StatusForbidden, "service %s does not allow switching to %q: this session can reach credentials and the proxy cannot scan that stream; list it in the service's allow_upgrades to permit it",
				x.svc.Service.Name, proto).as(activity.CodeUpgrade)
		}
	}
	return nil
}

// scrubScope registers every credential in the session's scope for
// scrubbing, not only those this request sends (and first, so that a
// session's requests share one set whichever credentials they resolve,
// and so one cached redactor): an upstream may store a
// secret from one request and return it in the answer to another
// (through a passthrough service, or a request that carried nothing).
// Stale values count too; they are recognised, never sent.
func (x *exchange) scrubScope() {
	for cred := range x.sess.Credentials() {
		standIn, _ := x.sess.Placeholder(cred)
		if v, ok := x.creds.ForScrubbing(cred); ok {
			x.secrets.Add(v, standIn)
		}
		for _, tok := range x.creds.TokensForScrubbing(cred) {
			x.secrets.Add(tok, standIn)
		}
	}
}

// secret is the one read of a credential on the request path: it
// applies freshness (a stale store refuses), and registers the value
// with the stand-in the agent knows (its placeholder) for scrubbing.
func (x *exchange) secret(cred string) (string, error) {
	v, err := x.creds.Resolve(x.r.Context(), cred, x.start)
	if err != nil {
		return "", err
	}
	if _, ok := x.creds.Source(cred); ok {
		if x.tokens == nil {
			x.tokens = map[string]string{}
		}
		x.tokens[cred] = v
	}
	standIn, ok := x.sess.Placeholder(cred)
	if !ok {
		standIn = scrub.Redacted
	}
	x.secrets.Add(v, standIn)
	if !slices.Contains(x.resolved, cred) {
		x.resolved = append(x.resolved, cred)
	}
	return v, nil
}

// send forwards the request. When the session can reach a secret, the
// answer must be scannable, and whole: a Range request would let the
// agent read a secret in slices that never match.
func (p *Proxy) send(w http.ResponseWriter, x *exchange) {
	if x.redactor != nil {
		// Only what scrubResponse can decode and scan; the agent gets identity.
		x.r.Header.Set("Accept-Encoding", "identity, gzip")
		x.r.Header.Del("Range")
		x.r.Header.Del("If-Range")
		// No WebSocket extension: permessage-deflate would hide the
		// frames' text from the scan (websocket.go).
		x.r.Header.Del("Sec-WebSocket-Extensions")
	}
	p.rp.ServeHTTP(w, x.r.WithContext(context.WithValue(x.r.Context(), exchangeKey{}, x)))
}

type exchangeKey struct{}

// refuse answers the agent for a request the pipeline did not forward,
// or whose upstream exchange failed.
func (p *Proxy) refuse(w http.ResponseWriter, x *exchange, err error) {
	a := answerFor(err)
	status, reason := a.status, a.reason
	x.refusal, x.code = x.redactor.String(reason), a.code
	if status >= http.StatusInternalServerError && status != statusClientClosed {
		// The agent gets the mapped reason; the operator gets the error.
		p.logger.Warn("request failed", zap.String("session", x.sess.ID), zap.String("target", x.target.String()),
			zap.Int("status", status), zap.String("error", x.redactor.String(err.Error())))
	}
	if status == statusClientClosed {
		w.WriteHeader(status) // nobody reads it; the log line records it
		return
	}
	writeRefusal(w, x.r, a, x.redactor)
}

// logExchange writes the request's one log line (with the reason when
// it was refused or failed), counts it for its session and tells the
// observer (the activity log, the metrics).
func (p *Proxy) logExchange(x *exchange, rec *statusRecorder) {
	x.sess.Touch(x.start)
	svc := ""
	if x.svc != nil {
		svc = x.svc.Service.Name
	}
	x.takeBodyCreds()
	duration := time.Since(x.start)
	if p.deps.observe != nil {
		e := &activity.Entry{At: x.start.Add(duration), Session: x.sess.ID, Agent: x.sess.Agent, Service: svc, Method: x.r.Method,
			Host: x.target.host, Port: x.target.port, Path: x.path, Status: rec.status(), Decision: activity.Forwarded,
			Code: x.code, Reason: x.refusal, BytesIn: max(x.r.ContentLength, 0), BytesOut: rec.bytes, Duration: duration,
			Credentials: x.resolved, Client: clientHost(x.r.RemoteAddr)}
		if x.refusal != "" {
			e.Decision = decisionFor(x.code)
		}
		if x.code == activity.CodeUncoveredHost {
			// Refused in match, before anything was injected: the
			// agent's own header (for the discovered hosts).
			e.AuthScheme = activity.AuthSchemeOf(x.r.Header)
		}
		p.deps.observe.Observe(e)
	}
	why := zap.Skip()
	if x.refusal != "" {
		why = zap.String("refused", x.refusal)
	}
	p.logger.Info("proxied request",
		zap.String("session", x.sess.ID),
		zap.String("service", svc),
		zap.String("method", x.r.Method),
		zap.String("host", x.target.host),
		zap.Int("port", x.target.port),
		zap.String("path", x.path), // never the query: it may carry a credential
		zap.Int("status", rec.status()),
		zap.Int64("bytes", rec.bytes),
		zap.Duration("duration", duration),
		zap.Strings("credentials", x.resolved),
		why)
}
