package caddymodule

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

func init() {
	caddy.RegisterModule(new(Proxy))
}

// Proxy is the agents' HTTP proxy. It authenticates the session, takes
// CONNECT tunnels apart with a leaf certificate from the agent_vault
// CA, matches each inner request to a service, swaps placeholders for
// credentials, injects the service's auth and forwards the request over
// verified TLS. Absolute-form http:// requests are forwarded too, but a
// credential is only sent over cleartext to a service that allows it.
type Proxy struct {
	// What to do with a request for a host that no service in the
	// session's scope covers: "deny" (the default) answers 403 and never
	// contacts the host; "tunnel" relays a CONNECT's bytes unchanged,
	// without TLS interception or injection, and forwards an absolute-form
	// http:// request without injection (the SSRF rules still apply, and
	// a placeholder in such a request is still refused).
	Unmatched string `json:"unmatched,omitempty"`

	// Timeout for connecting to an upstream. Default 10s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// How long to wait for an upstream's response headers. Default 5m
	// (model APIs can think for a while before answering).
	ResponseHeaderTimeout caddy.Duration `json:"response_header_timeout,omitempty"`

	// How long an intercepted tunnel may sit idle between requests
	// before it is closed. Default 2m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	app       *App
	logger    *zap.Logger
	transport *http.Transport
	rp        *httputil.ReverseProxy
	dialer    *egress.Dialer
	inner     *http.Server
	innerLn   *connListener
	tunnels   sync.Map // *tls.Conn -> *tunnel
	redactors redactorCache
}

// CaddyModule returns the Caddy module information.
func (*Proxy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.agent_vault_proxy",
		New: func() caddy.Module { return new(Proxy) },
	}
}

// Provision finds the app and builds the upstream transport and the
// server that handles requests inside intercepted tunnels.
func (p *Proxy) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	appIface, err := ctx.App("agent_vault")
	if err != nil {
		return fmt.Errorf("agent_vault_proxy needs the agent_vault app: %v", err)
	}
	p.app = appIface.(*App)
	if p.DialTimeout == 0 {
		p.DialTimeout = caddy.Duration(10 * time.Second)
	}
	if p.ResponseHeaderTimeout == 0 {
		p.ResponseHeaderTimeout = caddy.Duration(5 * time.Minute)
	}
	if p.IdleTimeout == 0 {
		p.IdleTimeout = caddy.Duration(2 * time.Minute)
	}

	p.dialer = &egress.Dialer{
		Policy: p.app.egress,
		Dialer: net.Dialer{Timeout: time.Duration(p.DialTimeout), KeepAlive: 30 * time.Second},
	}
	// Upstream TLS is verified against the system roots (SSL_CERT_FILE
	// of this process is honoured); there is deliberately no option to
	// skip verification.
	p.transport = &http.Transport{
		Proxy:                 nil, // never chain through the environment's proxy
		DialContext:           p.dialer.DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     false, // HTTP/1.1 upstream: measurably cheaper per request than Go's h2 client here, and upgrades need it
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Duration(p.ResponseHeaderTimeout),
		ExpectContinueTimeout: time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: p.transport,
		// Zero: bodies of known length go out in one piece; streams
		// (text/event-stream or unknown length) are flushed on every
		// write by ReverseProxy itself, so SSE arrives as sent.
		FlushInterval:  0,
		BufferPool:     copyBuffers,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       zap.NewStdLog(p.logger.Named("upstream")),
	}

	p.innerLn = newConnListener()
	p.inner = &http.Server{
		Handler:           http.HandlerFunc(p.serveInner),
		ReadHeaderTimeout: 30 * time.Second, // also bounds the TLS handshake
		IdleTimeout:       time.Duration(p.IdleTimeout),
		ConnContext:       p.tunnelContext,
		ConnState:         p.tunnelState,
		ErrorLog:          zap.NewStdLog(p.logger.Named("tunnel")),
	}
	go p.inner.Serve(p.innerLn) //nolint:errcheck // returns when Cleanup closes the listener
	return nil
}

// Validate checks the handler's configuration.
func (p *Proxy) Validate() error {
	switch p.Unmatched {
	case "", "deny", "tunnel":
	default:
		return fmt.Errorf(`unmatched: want "deny" or "tunnel", got %q`, p.Unmatched)
	}
	if p.DialTimeout < 0 || p.ResponseHeaderTimeout < 0 || p.IdleTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	return nil
}

// Cleanup closes intercepted tunnels and idle upstream connections. A
// config reload therefore drops open tunnels; sessions survive it, so
// clients reconnect with the same token.
func (p *Proxy) Cleanup() error {
	if p.inner != nil {
		p.inner.Close()
	}
	if p.transport != nil {
		p.transport.CloseIdleConnections()
	}
	return nil
}

// target is where one request is going, as fixed by the CONNECT line
// or the absolute-form URL.
type target struct {
	host string // normalised: lower case, IPv6 without brackets
	port int
	tls  bool
}

func (t target) String() string {
	scheme := "http"
	if t.tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(t.host, strconv.Itoa(t.port))
}

// ServeHTTP handles one request from an agent to the proxy.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	sess, err := p.authenticate(r)
	if err != nil {
		p.logger.Info("proxy authentication failed", zap.String("reason", err.Error()),
			zap.String("method", r.Method), zap.String("remote", r.RemoteAddr))
		w.Header().Set("Proxy-Authenticate", `Basic realm="agent-vault"`)
		refuse(w, http.StatusProxyAuthRequired, "proxy authentication required: "+err.Error())
		return nil
	}
	switch {
	case r.Method == http.MethodConnect:
		p.serveConnect(w, r, sess)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		host, port, err := hostname.Normalize(r.URL.Host, 80)
		if err != nil {
			refuse(w, http.StatusBadRequest, "bad target: "+err.Error())
			return nil
		}
		p.forward(w, r, sess, target{host: host, port: port, tls: false})
	case r.URL.IsAbs():
		refuse(w, http.StatusBadRequest, "use CONNECT for "+r.URL.Scheme+" targets")
	default:
		refuse(w, http.StatusBadRequest, "this is the agent-vault proxy: send CONNECT or absolute-form http:// requests")
	}
	return nil
}

// authenticate returns the session named by Proxy-Authorization.
func (p *Proxy) authenticate(r *http.Request) (*sessions.Session, error) {
	token, err := parseProxyAuthorization(r.Header.Get("Proxy-Authorization"))
	if err != nil {
		return nil, err
	}
	return p.app.sessions.Authenticate(token)
}

// serveConnect opens a tunnel: intercepted when an in-scope service
// covers the target, relayed when the operator allows unmatched hosts,
// refused otherwise.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request, sess *sessions.Session) {
	host, port, err := hostname.Normalize(r.Host, 443)
	if err != nil {
		refuse(w, http.StatusBadRequest, "bad CONNECT target: "+err.Error())
		return
	}
	tgt := target{host: host, port: port, tls: true}
	covered := p.app.Services().AllowsHost(host, port, true, sess.InScope)
	if !covered && p.Unmatched != "tunnel" {
		p.logger.Info("egress denied", zap.String("session", sess.ID), zap.String("target", tgt.String()))
		refuse(w, http.StatusForbidden, fmt.Sprintf("no service in this session's scope covers %s; the proxy denies unknown hosts", net.JoinHostPort(host, strconv.Itoa(port))))
		return
	}

	var upstream net.Conn
	if !covered {
		// Dial before answering 200 so a refused or unreachable host
		// gets a clear status instead of a dropped tunnel.
		upstream, err = p.dialer.DialContext(r.Context(), "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			p.dialFailed(w, sess, tgt, err)
			return
		}
	}

	conn, err := hijack(w)
	if err != nil {
		if upstream != nil {
			upstream.Close()
		}
		p.logger.Error("hijacking CONNECT", zap.Error(err))
		return
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		conn.Close()
		if upstream != nil {
			upstream.Close()
		}
		return
	}

	if !covered {
		p.relay(conn, upstream, sess, tgt)
		return
	}

	tlsConn := tls.Server(conn, &tls.Config{
		GetCertificate: p.app.minter.GetCertificateFor(host),
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	})
	tun := &tunnel{sess: sess, target: tgt}
	p.tunnels.Store(tlsConn, tun)
	tun.untrack = sess.Track(tlsConn)
	if !p.innerLn.push(tlsConn) {
		tlsConn.Close()
		p.forgetTunnel(tlsConn, true)
	}
}

// relay copies bytes both ways for an unmatched host the operator
// chose to let through; nothing is inspected or injected.
func (p *Proxy) relay(client, upstream net.Conn, sess *sessions.Session, tgt target) {
	untrackC := sess.Track(client)
	untrackU := sess.Track(upstream)
	defer untrackC()
	defer untrackU()
	start := time.Now()
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(upstream, client)
		if tc, ok := upstream.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- n
	}()
	down, _ := io.Copy(client, upstream)
	client.Close()
	up := <-done
	upstream.Close()
	p.logger.Info("tunnel relayed",
		zap.String("session", sess.ID), zap.String("target", tgt.String()),
		zap.Int64("bytes_up", up), zap.Int64("bytes_down", down), zap.Duration("duration", time.Since(start)))
}

// tunnel is what the inner server knows about an intercepted
// connection.
type tunnel struct {
	sess    *sessions.Session
	target  target
	untrack func()
}

type tunnelKey struct{}

func (p *Proxy) tunnelContext(ctx context.Context, c net.Conn) context.Context {
	if tun, ok := p.tunnels.Load(c); ok {
		return context.WithValue(ctx, tunnelKey{}, tun.(*tunnel))
	}
	return ctx
}

func (p *Proxy) tunnelState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateClosed:
		p.forgetTunnel(c, true)
	case http.StateHijacked:
		// An upgraded connection (WebSocket) lives on outside the
		// server: keep it tracked so that ending the session still
		// closes it. The session forgets it when it ends.
		p.forgetTunnel(c, false)
	}
}

func (p *Proxy) forgetTunnel(c net.Conn, untrack bool) {
	if tun, ok := p.tunnels.LoadAndDelete(c); ok && untrack {
		if f := tun.(*tunnel).untrack; f != nil {
			f()
		}
	}
}

// serveInner handles a request that arrived inside an intercepted
// tunnel.
func (p *Proxy) serveInner(w http.ResponseWriter, r *http.Request) {
	tun, ok := r.Context().Value(tunnelKey{}).(*tunnel)
	if !ok {
		refuse(w, http.StatusInternalServerError, "tunnel state lost")
		return
	}
	// The CONNECT line fixed the target; SNI was checked against it in
	// the handshake and the Host header must agree too.
	host, port, err := hostname.Normalize(r.Host, 443)
	if err != nil || host != tun.target.host || port != tun.target.port {
		refuse(w, http.StatusMisdirectedRequest, fmt.Sprintf("request Host %q does not match the tunnel's target %s", r.Host, tun.target))
		return
	}
	p.forward(w, r, tun.sess, tun.target)
}

// refusal is a request the proxy will not forward, with the status and
// reason to give the agent. Reasons never contain secret values.
type refusal struct {
	status int
	reason string
}

func (e *refusal) Error() string { return e.reason }

// forward is the path of one proxied request: check the session, match
// a service, swap placeholders, inject auth, send it upstream.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, sess *sessions.Session, tgt target) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	// The path as the agent sent it: after rewriting it may hold a secret.
	path := r.URL.EscapedPath()
	var svcName string
	var credNames []string
	defer func() {
		sess.Touch(start)
		p.logger.Info("proxied request",
			zap.String("session", sess.ID),
			zap.String("service", svcName),
			zap.String("method", r.Method),
			zap.String("host", tgt.host),
			zap.Int("port", tgt.port),
			zap.String("path", path), // never the query: it may carry a credential
			zap.Int("status", rec.status()),
			zap.Int64("bytes", rec.bytes),
			zap.Duration("duration", time.Since(start)),
			zap.Strings("credentials", credNames))
	}()

	if !sess.Active(start) {
		refuse(rec, http.StatusForbidden, "session revoked or expired")
		return
	}

	svc, ok := p.app.Services().Lookup(tgt.host, tgt.port, tgt.tls, path, sess.InScope)
	if ok {
		svcName = svc.Service.Name
	} else if tgt.tls || p.Unmatched != "tunnel" {
		refuse(rec, http.StatusForbidden, fmt.Sprintf("no service in this session's scope covers %s%s", tgt, path))
		return
	}
	injects := ok && svc.Service.Auth.Type != services.AuthPassthrough
	cleartextOK := tgt.tls || (ok && svc.Service.AllowCleartext)
	if injects && !cleartextOK {
		refuse(rec, http.StatusForbidden, fmt.Sprintf("service %s injects a credential and does not allow cleartext http; use https", svcName))
		return
	}

	// One snapshot for the whole request, so the value sent and the
	// value redacted from the answer are the same even mid-rotation.
	creds := p.app.creds.Load()
	// secrets maps every form of a secret sent upstream to what the
	// agent may see instead, for redacting the response.
	secrets := map[string]string{}
	_, err := services.RewriteRequest(r, func(ph string) (string, error) {
		cred, known := sess.Credential(ph)
		switch {
		case !known:
			return "", &refusal{http.StatusForbidden, "the request carries a placeholder that does not belong to this session"}
		case !ok || !svc.Uses(cred):
			return "", &refusal{http.StatusForbidden, fmt.Sprintf("credential %s is not bound to %s in this session", cred, tgt)}
		case !cleartextOK:
			return "", &refusal{http.StatusForbidden, fmt.Sprintf("credential %s would be sent over cleartext http", cred)}
		}
		v, err := creds.lookup(cred, start)
		if err != nil {
			return "", unavailable(cred, err)
		}
		addSecretForms(secrets, v, ph)
		credNames = appendUnique(credNames, cred)
		return v, nil
	})
	if err != nil {
		p.refuseErr(rec, err)
		return
	}
	if len(secrets) > 0 {
		// A Basic header the agent built from a placeholder was
		// re-encoded around the secret: that encoding is secret too.
		if scheme, blob, found := strings.Cut(r.Header.Get("Authorization"), " "); found && strings.EqualFold(scheme, "Basic") {
			secrets[blob] = redactedMark
		}
	}

	if injects {
		for _, cred := range svc.Credentials() {
			if _, err := creds.lookup(cred, start); err != nil {
				p.refuseErr(rec, unavailable(cred, err))
				return
			}
		}
		var q url.Values
		if svc.Service.Auth.Type == services.AuthQuery {
			q = r.URL.Query()
		}
		injected, written, err := svc.Inject(r.Header, q, func(name string) (string, bool) {
			v, have := creds.values[name]
			return v, have
		})
		if err != nil {
			var missing *services.MissingCredentialError
			if errors.As(err, &missing) {
				refuse(rec, http.StatusServiceUnavailable, fmt.Sprintf("credential %s for service %s is not available", missing.Name, svcName))
				return
			}
			refuse(rec, http.StatusInternalServerError, "injecting credentials failed")
			return
		}
		if q != nil {
			r.URL.RawQuery = q.Encode()
		}
		for _, name := range injected {
			ph, has := sess.Placeholder(name)
			if !has {
				ph = redactedMark
			}
			addSecretForms(secrets, creds.values[name], ph)
			credNames = appendUnique(credNames, name)
		}
		for _, form := range written { // exactly what went on the wire (Basic blob, escaped query value)
			if _, known := secrets[form]; !known {
				secrets[form] = redactedMark
			}
		}
	}

	fw := &forwarding{target: tgt}
	if len(secrets) > 0 {
		fw.redactor = p.redactors.get(secrets)
		rec.redactor = fw.redactor
		// Ask for an identity (or transport-decoded gzip) body so the
		// response can be scanned, and whole: a Range request would let
		// the agent read a secret in slices that never match.
		r.Header.Del("Accept-Encoding")
		r.Header.Del("Range")
		r.Header.Del("If-Range")
	}
	p.rp.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), forwardingKey{}, fw)))
}

// redactorCache keeps built redactors: building one checks every
// replacement against every secret, which showed up as a sixth of the
// proxy's CPU when done per request; the same few secret sets recur.
type redactorCache struct {
	mu sync.Mutex
	m  map[string]*services.Redactor
}

// maxCachedRedactors bounds the cache; past it, it starts over.
const maxCachedRedactors = 1024

func (c *redactorCache) get(secrets map[string]string) *services.Redactor {
	keys := make([]string, 0, len(secrets))
	for k := range secrets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(secrets[k])
		b.WriteByte(0)
	}
	// The key holds secrets, so it is hashed: the cache keeps no copy
	// of a value beyond what the redactor itself needs.
	sum := sha256.Sum256([]byte(b.String()))
	key := string(sum[:])
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.m[key]; ok {
		return r
	}
	if c.m == nil || len(c.m) >= maxCachedRedactors {
		c.m = make(map[string]*services.Redactor)
	}
	r := services.NewRedactor(secrets)
	c.m[key] = r
	return r
}

// unavailable is the refusal for a credential that cannot be used now.
func unavailable(cred string, err error) *refusal {
	if errors.Is(err, errUnknownCredential) {
		return &refusal{http.StatusServiceUnavailable, fmt.Sprintf("credential %s is not available", cred)}
	}
	return &refusal{http.StatusServiceUnavailable, fmt.Sprintf("credential %s cannot be used: %v", cred, err)}
}

// redactedMark replaces a secret form that has no placeholder of its own.
const redactedMark = "[agent-vault:redacted]"

// addSecretForms registers a secret and the encodings it commonly
// takes when an upstream echoes it (URL path and query escaping, JSON
// string escaping), all to be replaced by repl.
func addSecretForms(secrets map[string]string, v, repl string) {
	if v == "" {
		return
	}
	secrets[v] = repl
	for _, form := range []string{url.PathEscape(v), url.QueryEscape(v), jsonEscape(v, false), jsonEscape(v, true)} {
		if _, known := secrets[form]; !known {
			secrets[form] = repl
		}
	}
}

// jsonEscape is v as it appears inside a JSON string, with or without
// HTML-safe escaping of <, > and &.
func jsonEscape(v string, html bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(html)
	enc.Encode(v)
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// forwarding carries per-request state into the reverse proxy hooks.
type forwarding struct {
	target   target
	redactor *services.Redactor // nil when nothing secret was sent
}

type forwardingKey struct{}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	fw := pr.In.Context().Value(forwardingKey{}).(*forwarding)
	pr.Out.URL.Scheme = "http"
	if fw.target.tls {
		pr.Out.URL.Scheme = "https"
	}
	pr.Out.URL.Host = net.JoinHostPort(fw.target.host, strconv.Itoa(fw.target.port))
	pr.Out.Host = pr.In.Host
	pr.Out.Header.Del("Proxy-Authorization")
}

// modifyResponse keeps secrets the upstream echoes back away from the
// agent. A body it cannot scan is refused rather than passed on.
func (p *Proxy) modifyResponse(res *http.Response) error {
	fw := res.Request.Context().Value(forwardingKey{}).(*forwarding)
	if fw.redactor == nil {
		return nil
	}
	fw.redactor.Header(res.Header)
	if res.StatusCode == http.StatusSwitchingProtocols {
		return nil // the handshake is redacted; upgraded frames are not scanned (documented limit)
	}
	for _, v := range res.Header.Values("Content-Encoding") {
		for _, ce := range strings.Split(v, ",") {
			if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
				return &refusal{http.StatusBadGateway, "upstream sent a " + ce + "-encoded response that cannot be scanned for echoed credentials"}
			}
		}
	}
	if noBody(res) {
		return nil
	}
	if res.ContentLength >= 0 && res.ContentLength <= maxBufferedScan {
		// A short body of known length is scanned whole, so its length
		// stays known and it leaves in one write.
		body, err := io.ReadAll(io.LimitReader(res.Body, res.ContentLength))
		res.Body.Close() // populates res.Trailer
		if err != nil {
			return &refusal{http.StatusBadGateway, "reading the upstream response failed"}
		}
		fw.redactor.Header(res.Trailer)
		out := fw.redactor.String(string(body))
		res.Body = io.NopCloser(strings.NewReader(out))
		res.ContentLength = int64(len(out))
		res.Header.Set("Content-Length", strconv.Itoa(len(out)))
		return nil
	}
	res.Body = &redactedBody{Reader: fw.redactor.Reader(res.Body), body: res.Body, res: res, redactor: fw.redactor}
	res.Header.Del("Content-Length") // redaction may change the length
	res.ContentLength = -1
	return nil
}

// redactedBody streams a scanned body. ReverseProxy copies trailers
// after closing the body, so Close scans them too.
type redactedBody struct {
	io.Reader
	body     io.Closer
	res      *http.Response
	redactor *services.Redactor
}

func (b *redactedBody) Close() error {
	err := b.body.Close()
	b.redactor.Header(b.res.Trailer)
	return err
}

// maxBufferedScan is the largest known-length response body scanned in
// one piece; longer or unknown-length bodies are scanned as a stream.
const maxBufferedScan = 256 << 10

// noBody reports responses that carry no body whatever their headers say.
func noBody(res *http.Response) bool {
	return res.Request.Method == http.MethodHead || res.StatusCode == http.StatusNoContent ||
		res.StatusCode == http.StatusNotModified || (res.StatusCode >= 100 && res.StatusCode < 200)
}

// copyBuffers recycles the reverse proxy's copy buffers; allocating
// 32 KiB per response showed up in the proxy's CPU profile (GC).
var copyBuffers = &bufferPool{sync.Pool{New: func() any { return new([32 << 10]byte) }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return b.p.Get().(*[32 << 10]byte)[:] }
func (b *bufferPool) Put(x []byte) { b.p.Put((*[32 << 10]byte)(x)) }

// upstreamError answers a failed upstream exchange without leaking the
// request URL (which may hold an injected query credential).
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	var ref *refusal
	var denied *egress.RefusedError
	switch {
	case errors.As(err, &ref):
		refuse(w, ref.status, ref.reason)
	case errors.As(err, &denied):
		refuse(w, http.StatusForbidden, denied.Error())
	case errors.Is(err, context.Canceled):
		w.WriteHeader(499) // client went away; nobody reads this
	default:
		fw := r.Context().Value(forwardingKey{}).(*forwarding)
		msg := upstreamErrorText(err)
		if fw.redactor != nil {
			msg = fw.redactor.String(msg)
		}
		p.logger.Warn("upstream error", zap.String("target", fw.target.String()), zap.String("error", msg))
		refuse(w, http.StatusBadGateway, "upstream "+fw.target.String()+" failed: "+msg)
	}
}

// upstreamErrorText drops the *url.Error wrapper, whose text repeats
// the full URL (and so any query credential).
func upstreamErrorText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

func (p *Proxy) dialFailed(w http.ResponseWriter, sess *sessions.Session, tgt target, err error) {
	var denied *egress.RefusedError
	if errors.As(err, &denied) {
		p.logger.Info("egress refused", zap.String("session", sess.ID), zap.String("target", tgt.String()), zap.String("reason", denied.Error()))
		refuse(w, http.StatusForbidden, denied.Error())
		return
	}
	refuse(w, http.StatusBadGateway, "cannot reach "+tgt.String()+": "+err.Error())
}

func (p *Proxy) refuseErr(w http.ResponseWriter, err error) {
	var ref *refusal
	if errors.As(err, &ref) {
		refuse(w, ref.status, ref.reason)
		return
	}
	refuse(w, http.StatusForbidden, "request refused: "+err.Error())
}

// refuse answers the agent with a plain-text reason.
func refuse(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Agent-Vault-Refused", "1")
	w.WriteHeader(status)
	io.WriteString(w, "agent-vault: "+reason+"\n")
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// hijack takes the agent's connection over from the HTTP server. Bytes
// the server already buffered (a pipelined ClientHello) are replayed.
func hijack(w http.ResponseWriter) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	// Caddy's server timeouts no longer apply to a hijacked connection;
	// the inner server sets its own.
	conn.SetDeadline(time.Time{})
	if brw != nil && brw.Reader.Buffered() > 0 {
		conn = &prefixConn{Conn: conn, r: io.MultiReader(brw.Reader, conn)}
	}
	return conn, nil
}

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// statusRecorder remembers the status and body size for the log line.
type statusRecorder struct {
	http.ResponseWriter
	code     int
	bytes    int64
	redactor *services.Redactor // set when secrets went upstream
}

func (s *statusRecorder) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// ReverseProxy relays informational responses (103 Early Hints)
		// straight from the transport, bypassing ModifyResponse; their
		// headers are scanned here. They are not the final status.
		s.redactor.Header(s.Header())
		s.ResponseWriter.WriteHeader(code)
		return
	}
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// connListener feeds intercepted TLS connections to the inner server.
type connListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// Interface guards
var (
	_ caddy.Provisioner           = (*Proxy)(nil)
	_ caddy.Validator             = (*Proxy)(nil)
	_ caddy.CleanerUpper          = (*Proxy)(nil)
	_ caddyhttp.MiddlewareHandler = (*Proxy)(nil)
)
