package caddymodule

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/authguard"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/limits"
	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

func init() {
	caddy.RegisterModule(new(Proxy))
}

// UnmatchedPolicy is what the proxy does with a host no service in the
// session's scope covers (Proxy.Unmatched).
type UnmatchedPolicy string

// The unmatched policies.
const (
	UnmatchedDeny   UnmatchedPolicy = "deny"
	UnmatchedTunnel UnmatchedPolicy = "tunnel"
)

// checkUnmatched is the one rule for Proxy.Unmatched ("" is the default).
func checkUnmatched(v UnmatchedPolicy) error {
	switch v {
	case "", UnmatchedDeny, UnmatchedTunnel:
		return nil
	}
	return fmt.Errorf("unmatched: want %q or %q, got %q", UnmatchedDeny, UnmatchedTunnel, v)
}

// checkTimeout is the one rule for the proxy's timeouts.
func checkTimeout(name string, d caddy.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s: must not be negative", name)
	}
	return nil
}

// Proxy is the agents' HTTP proxy. It authenticates the session, takes
// CONNECT tunnels apart with a leaf certificate from the agent_vault
// CA, matches each inner request to a service, swaps placeholders for
// credentials, injects the service's auth and forwards the request over
// verified TLS. Absolute-form http:// requests are forwarded too, but a
// credential is only sent over cleartext to a service that allows it.
//
// The request path, in execution order: ServeHTTP (authenticate) →
// tunnel.go (CONNECT, TLS, the inner server) → forward.go (the
// pipeline: authorize, match, take one credential snapshot, rewrite
// placeholders, inject; every credential read goes through
// exchange.secret, the one lookup, which applies freshness) → response.go
// (forward and scrub the answer); refusal.go maps every error to what
// the agent sees.
type Proxy struct {
	// What to do with a request for a host that no service in the
	// session's scope covers: "deny" (the default) answers 403 and never
	// contacts the host; "tunnel" relays a CONNECT's bytes unchanged,
	// without TLS interception or injection, and forwards an absolute-form
	// http:// request without injection (the SSRF rules still apply, and
	// a placeholder in such a request is still refused).
	Unmatched UnmatchedPolicy `json:"unmatched,omitempty"`

	// Timeout for connecting to an upstream. Default 10s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// How long to wait for an upstream's response headers. Default 5m
	// (model APIs can think for a while before answering).
	ResponseHeaderTimeout caddy.Duration `json:"response_header_timeout,omitempty"`

	// How long an intercepted tunnel may sit idle between requests
	// before it is closed. Default 2m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// The largest response body the proxy scans for echoed secrets
	// ("100MiB"; the size syntax of Caddy's request_body max_size),
	// counted after gzip decoding: a larger Content-Length is answered
	// 502 with the reason, and a body of unknown length that grows
	// past it is cut there (the agent sees the response end early: a
	// truncated chunked body, or an HTTP/2 stream reset). Bodies that
	// are not scanned (a session that can reach no secret) are not
	// capped. Default: no cap; the scanner streams in bounded memory,
	// so the cap is a limit on traffic, not a guard of the broker.
	MaxResponseBody string `json:"max_response_body,omitempty"`

	// The most requests one session may have in flight at once
	// (upgraded WebSocket connections included): the next is answered
	// 429 with Retry-After: 1 at once, never queued. Default 64.
	MaxConcurrentPerSession int `json:"max_concurrent_per_session,omitempty"`

	deps      proxyDeps
	logger    *zap.Logger
	transport *http.Transport
	rp        *httputil.ReverseProxy
	dialer    *egress.Dialer
	inner     *http.Server
	innerLn   *connListener
	tunnels   tunnelTable
	redactors scrub.Cache
	authFails authguard.Guard
	// maxResponseBody is MaxResponseBody in bytes (0: none); rates and
	// slots are the services' rate limits and the per-session cap.
	maxResponseBody int64
	rates           limits.Buckets
	slots           limits.Slots
}

// proxyDeps is everything the proxy reads from the rest of the app, as
// small interfaces: the pipeline depends on what it uses, not on App.
type proxyDeps struct {
	sessions sessionAuthenticator
	services serviceTable
	creds    credentialSnapshots
	leaves   leafSource
	egress   *egress.Policy
	self     *egress.Listeners // the broker's own listen addresses; never dialed
	state    stateHealth       // nil: no state database to wait for
	// observe is told of every request served or refused (the
	// activity log and the metrics); nil: nobody.
	observe proxyObserver
	// exchanges counts the requests and relayed tunnels whose entry
	// is still to come, for shutdown to wait on (inflight.go); nil:
	// nobody waits.
	exchanges *inFlight
}

type sessionAuthenticator interface {
	Authenticate(token string) (*sessions.Session, error)
}

type serviceTable interface {
	Services() *services.Table
}

type credentialSnapshots interface {
	Snapshot() *credentials.Snapshot
}

type leafSource interface {
	GetCertificateFor(host string) func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// CaddyModule returns the Caddy module information.
func (*Proxy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.agent_vault_proxy",
		New: func() caddy.Module { return new(Proxy) },
	}
}

// Defaults of the Proxy's optional fields.
const (
	defaultDialTimeout           = 10 * time.Second
	defaultResponseHeaderTimeout = 5 * time.Minute
	defaultIdleTimeout           = 2 * time.Minute
)

// Provision checks the configuration, refuses a listen address another
// process holds, finds the app and builds the upstream transport and the
// server that handles requests inside intercepted tunnels.
func (p *Proxy) Provision(ctx caddy.Context) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if err := checkServerAddrs(ctx); err != nil { // bindcheck.go
		return err
	}
	appIface, err := ctx.App("agent_vault")
	if err != nil {
		return fmt.Errorf("agent_vault_proxy needs the agent_vault app: %v", err)
	}
	app := appIface.(*App)
	p.start(ctx.Logger(), app.proxyDeps())
	app.addTunnels(&p.tunnels) // metricswiring.go: counted at scrape time
	return nil
}

// Validate checks the handler's configuration. It does no I/O, so
// Provision runs it first.
func (p *Proxy) Validate() error {
	return errors.Join(checkUnmatched(p.Unmatched),
		checkTimeout("dial_timeout", p.DialTimeout),
		checkTimeout("response_header_timeout", p.ResponseHeaderTimeout),
		checkTimeout("idle_timeout", p.IdleTimeout),
		checkMaxResponseBody(p.MaxResponseBody),
		checkMaxConcurrent(p.MaxConcurrentPerSession))
}

// checkMaxResponseBody validates max_response_body ("" is no cap).
func checkMaxResponseBody(s string) error {
	if s == "" {
		return nil
	}
	if _, err := services.ParseSize(s); err != nil {
		return fmt.Errorf("max_response_body: %w", err)
	}
	return nil
}

// checkMaxConcurrent validates max_concurrent_per_session (0 is the
// default).
func checkMaxConcurrent(n int) error {
	if n < 0 || n > maxConcurrentBound {
		return fmt.Errorf("max_concurrent_per_session %d: want 1 to %d (0 for the default, %d)", n, maxConcurrentBound, defaultMaxConcurrent)
	}
	return nil
}

// The default and the bound of max_concurrent_per_session.
const (
	defaultMaxConcurrent = 64
	maxConcurrentBound   = 100_000
)

// start fills in defaults and builds the proxy's parts around deps.
func (p *Proxy) start(logger *zap.Logger, deps proxyDeps) {
	p.logger, p.deps = logger, deps
	if p.Unmatched == "" {
		p.Unmatched = UnmatchedDeny
	}
	if p.DialTimeout == 0 {
		p.DialTimeout = caddy.Duration(defaultDialTimeout)
	}
	if p.ResponseHeaderTimeout == 0 {
		p.ResponseHeaderTimeout = caddy.Duration(defaultResponseHeaderTimeout)
	}
	if p.IdleTimeout == 0 {
		p.IdleTimeout = caddy.Duration(defaultIdleTimeout)
	}
	if p.MaxConcurrentPerSession == 0 {
		p.MaxConcurrentPerSession = defaultMaxConcurrent
	}
	if p.MaxResponseBody != "" {
		p.maxResponseBody, _ = services.ParseSize(p.MaxResponseBody) // checked by Validate
	}

	p.authFails.Summary = func(n int) {
		logger.Info("proxy authentication failed", zap.Int("failures_not_logged", n),
			zap.String("reason", "too many failed authentications from all addresses together to log each"))
	}
	if deps.self == nil {
		// Fail closed: a Listeners never Set refuses every upstream.
		deps.self = new(egress.Listeners)
		p.deps.self = deps.self
	}
	p.dialer = &egress.Dialer{
		Policy: deps.egress,
		Self:   deps.self,
		Dialer: net.Dialer{Timeout: time.Duration(p.DialTimeout), KeepAlive: 30 * time.Second},
	}
	// Upstream TLS is verified against the system roots (SSL_CERT_FILE
	// of this process is honoured); there is deliberately no option to
	// skip verification.
	p.transport = &http.Transport{
		Proxy:             nil, // never chain through the environment's proxy
		DialContext:       p.dialer.DialContext,
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: false, // HTTP/1.1 upstream: measurably cheaper per request than Go's h2 client here, and upgrades need it
		// Many agents calling one API each hold an upstream connection
		// (HTTP/1.1): a small per-host pool made most requests of 1000
		// concurrent agents pay a fresh upstream TLS handshake.
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Duration(p.ResponseHeaderTimeout),
		ExpectContinueTimeout: time.Second,
		// The transport neither asks for gzip nor decodes it: when the
		// session can reach a secret, send asks for identity or gzip
		// and scrubResponse decodes it (over every Content-Encoding
		// line, which the transport does not look at); in a session
		// without credentials, the agent's Accept-Encoding and the
		// upstream's answer pass untouched.
		DisableCompression: true,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: tokenRetry{base: p.transport, p: p},
		// Zero: bodies of known length go out in one piece; streams
		// (text/event-stream or unknown length) are flushed on every
		// write by ReverseProxy itself, so SSE arrives as sent.
		FlushInterval:  0,
		BufferPool:     copyBuffers,
		ModifyResponse: p.scrubResponse,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       p.scrubbedLog("upstream"),
	}

	p.innerLn = newConnListener()
	p.inner = &http.Server{
		Handler:           http.HandlerFunc(p.serveInner),
		ReadHeaderTimeout: 30 * time.Second, // also bounds the TLS handshake
		IdleTimeout:       time.Duration(p.IdleTimeout),
		ConnContext:       p.tunnels.context,
		ConnState:         p.tunnels.state,
		ErrorLog:          p.scrubbedLog("tunnel"),
	}
	go p.inner.Serve(p.innerLn) //nolint:errcheck // returns when Cleanup closes the listener
}

// Cleanup closes intercepted tunnels and idle upstream connections. A
// config reload therefore drops open tunnels; sessions survive it, so
// clients reconnect with the same token. The count of authentication
// failures not logged yet is logged now, not by a timer through this
// configuration's logger after the next one has taken over.
func (p *Proxy) Cleanup() error {
	p.authFails.Close()
	if p.inner != nil {
		p.inner.Close()
	}
	if p.transport != nil {
		p.transport.CloseIdleConnections()
	}
	return nil
}

// ServeHTTP handles one request from an agent to the proxy: it
// authenticates the session, then opens a tunnel (CONNECT) or forwards
// an absolute-form http:// request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if err := stateHealthy(p.deps.state); err != nil {
		p.refuseRequest(w, r, nil, requestTarget(r), err)
		return nil
	}
	sess, err := p.authenticate(r)
	if err != nil {
		p.authFailed(w, r, err)
		return nil
	}
	switch {
	case r.Method == http.MethodConnect:
		p.serveConnect(w, r, sess)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		host, port, err := hostname.Normalize(r.URL.Host, 80)
		if err != nil {
			p.refuseRequest(w, r, sess, requestTarget(r), &refusal{status: http.StatusBadRequest, reason: "bad target: " + err.Error()})
			return nil
		}
		p.forward(w, r, sess, target{host: host, port: port, tls: false})
	case r.URL.IsAbs():
		p.refuseRequest(w, r, sess, requestTarget(r), &refusal{status: http.StatusBadRequest, reason: "use CONNECT for " + r.URL.Scheme + " targets"})
	default:
		p.refuseRequest(w, r, sess, requestTarget(r), &refusal{status: http.StatusBadRequest, reason: "this is the agent-vault proxy: send CONNECT or absolute-form http:// requests"})
	}
	return nil
}

// refuseRequest answers a request refused before the pipeline (see
// refuseEarly) and tells the observer. sess is nil before
// authentication.
func (p *Proxy) refuseRequest(w http.ResponseWriter, r *http.Request, sess *sessions.Session, tgt target, err error) {
	a := refuseEarly(w, r, err)
	p.observeRefusal(r, sess, tgt, a.status, a.reason, a.code)
}

// observeRefusal tells the observer of a request refused before the
// pipeline.
func (p *Proxy) observeRefusal(r *http.Request, sess *sessions.Session, tgt target, status int, reason, code string) {
	if p.deps.observe == nil {
		return
	}
	p.deps.observe.Observe(refusalEntry(r, sess, tgt, status, reason, code))
}

// refusalEntry is the activity entry of a request refused before the
// pipeline.
func refusalEntry(r *http.Request, sess *sessions.Session, tgt target, status int, reason, code string) *activity.Entry {
	e := &activity.Entry{At: time.Now(), Method: r.Method, Host: tgt.host, Port: tgt.port, Status: status,
		Decision: decisionFor(code), Code: code, Reason: reason, Client: clientHost(r.RemoteAddr)}
	if sess != nil {
		e.Session, e.Agent = sess.ID, sess.Agent
	}
	if r.Method != http.MethodConnect {
		e.Path = r.URL.EscapedPath() // never the query
	}
	if code == activity.CodeUncoveredHost {
		e.AuthScheme = activity.AuthSchemeOf(r.Header) // for the discovered hosts
	}
	return e
}

// requestTarget is where r is going as far as its request line says
// (for the activity log of a request refused before its target was
// checked): in the canonical form of hostname.Normalize, so that the
// log's host filter finds it, or as sent when it does not parse.
func requestTarget(r *http.Request) target {
	hostPort, tls, def := r.URL.Host, false, 80
	if r.Method == http.MethodConnect || hostPort == "" {
		hostPort, tls, def = r.Host, true, 443
	}
	host, port, err := hostname.Normalize(hostPort, def)
	if err != nil {
		return target{host: hostPort, tls: tls}
	}
	return target{host: host, port: port, tls: tls}
}

// clientHost is a remote address without its port (no allocation).
func clientHost(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return remote
	}
	return host
}

// authFailed answers 407. Past an address's budget of failures it adds
// Retry-After and logs one summary line per interval instead of one per
// failure; past the budget of log lines of all addresses together, the
// lines dropped are counted in a periodic summary (see package authguard).
func (p *Proxy) authFailed(w http.ResponseWriter, r *http.Request, err error) {
	host, _, splitErr := net.SplitHostPort(r.RemoteAddr)
	if splitErr != nil {
		host = r.RemoteAddr
	}
	v := p.authFails.Fail(authguard.Key(host))
	if v.Log {
		fields := []zap.Field{zap.String("reason", err.Error()), zap.String("method", r.Method), zap.String("remote", r.RemoteAddr)}
		if v.Limited {
			fields = append(fields, zap.Int("failures_since_last_line", v.Suppressed), zap.Bool("limited", true))
		}
		p.logger.Info("proxy authentication failed", fields...)
	}
	w.Header().Set("Proxy-Authenticate", `Basic realm="agent-vault"`)
	if v.Limited {
		w.Header().Set("Retry-After", strconv.Itoa(int(v.RetryAfter.Round(time.Second)/time.Second)))
	}
	a := refuseEarly(w, r, &refusal{status: http.StatusProxyAuthRequired, reason: "proxy authentication required: " + err.Error()})
	status, reason, code := a.status, a.reason, a.code
	// The activity log takes each failure while the address is within
	// its budget; past it, only the summary authguard asks to log, so
	// that a flood of bad tokens does not flood the log.
	switch {
	case !v.Limited:
		p.observeRefusal(r, nil, requestTarget(r), status, reason, code)
	case v.Log:
		reason = fmt.Sprintf("%s (this entry stands for %d failures from this address since the last one)", reason, v.Suppressed)
		p.observeRefusal(r, nil, requestTarget(r), status, reason, code)
	}
}

// authenticate returns the session named by Proxy-Authorization.
func (p *Proxy) authenticate(r *http.Request) (*sessions.Session, error) {
	token, err := parseProxyAuthorization(r.Header.Get("Proxy-Authorization"))
	if err != nil {
		return nil, err
	}
	return p.deps.sessions.Authenticate(token)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Proxy)(nil)
	_ caddy.Validator             = (*Proxy)(nil)
	_ caddy.CleanerUpper          = (*Proxy)(nil)
	_ caddyhttp.MiddlewareHandler = (*Proxy)(nil)
)
