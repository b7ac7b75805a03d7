package caddymodule

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

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
	return scheme + "://" + t.hostPort()
}

func (t target) hostPort() string { return net.JoinHostPort(t.host, strconv.Itoa(t.port)) }

// serveConnect opens a tunnel: intercepted when an in-scope service
// covers the target, relayed when the operator allows unmatched hosts,
// refused otherwise.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request, sess *sessions.Session) {
	if r.ProtoMajor != 1 {
		// The tunnel takes over the connection, which HTTP/2 (h2c on
		// the proxy's port) cannot hand over: refuse before dialling.
		p.refuseRequest(w, r, sess, requestTarget(r), &refusal{status: http.StatusHTTPVersionNotSupported, reason: "CONNECT to the proxy must use HTTP/1.1"})
		return
	}
	host, port, err := hostname.Normalize(r.Host, 443)
	if err != nil {
		p.refuseRequest(w, r, sess, requestTarget(r), &refusal{status: http.StatusBadRequest, reason: "bad CONNECT target: " + err.Error()})
		return
	}
	tgt := target{host: host, port: port, tls: true}
	if svc, ok := p.deps.services.Services().RawTunnel(host, port, sess.InScope); ok {
		p.serveRawTunnel(w, r, sess, tgt, svc) // rawtunnel.go: intercept: false
		return
	}
	covered := p.deps.services.Services().AllowsHost(host, port, true, sess.InScope)
	if !covered && p.Unmatched != UnmatchedTunnel {
		p.logger.Info("egress denied", zap.String("session", sess.ID), zap.String("target", tgt.String()))
		// Each refused tunnel costs a leaf (minted for its host): a
		// session gets refusedTunnelRate of them a minute, then 429 at
		// the CONNECT.
		if ok, wait := p.rates.Take("refused-tunnel\x00"+sess.ID, refusedTunnelRate, time.Minute); !ok {
			ref := refused(http.StatusTooManyRequests, "this session opened more than %d tunnels a minute to hosts no service covers", refusedTunnelRate).
				as(activity.CodeRateLimited)
			ref.retryAfter = wait
			p.refuseRequest(w, r, sess, tgt, ref)
			return
		}
		p.refuseInTunnel(w, r, sess, tgt, uncoveredHost(tgt, tgt.hostPort(), "the proxy denies unknown hosts", sess))
		return
	}

	var upstream net.Conn
	if !covered {
		// Dial before answering 200 so a refused or unreachable host
		// gets a clear status instead of a dropped tunnel.
		upstream, err = p.dialer.DialContext(r.Context(), "tcp", tgt.hostPort())
		if err != nil {
			err = &upstreamFailure{target: tgt, err: err}
			p.logger.Info("relay refused", zap.String("session", sess.ID), zap.String("target", tgt.String()), zap.Error(err))
			p.refuseRequest(w, r, sess, tgt, err)
			return
		}
	}

	conn, ok := p.establish(w)
	if !ok {
		if upstream != nil {
			upstream.Close()
		}
		return
	}

	if !covered {
		p.relay(conn, upstream, sess, tgt, clientHost(r.RemoteAddr), "")
		return
	}
	p.intercept(conn, &tunnel{sess: sess, target: tgt}, nil)
}

// refusedTunnelRate is how many tunnels a minute a session may open to
// hosts nothing covers.
const refusedTunnelRate = 120

// refuseInTunnel refuses a CONNECT to a host no in-scope service
// covers where the agent can read why: the tunnel is opened and its
// TLS terminated with a leaf for the host (as an intercepted one), and
// every request inside it is answered with ref (serveInner), which
// curl, git and the language clients show, where a refused CONNECT
// shows only "CONNECT tunnel failed, response 403". The host is never
// resolved or dialled. A tunnel whose agent sent no request (it closed,
// or did not trust the leaf) is logged as the refused CONNECT.
func (p *Proxy) refuseInTunnel(w http.ResponseWriter, r *http.Request, sess *sessions.Session, tgt target, ref *refusal) {
	conn, ok := p.establish(w)
	if !ok {
		return
	}
	// What the log needs of the CONNECT, copied: r is the server's.
	connect := &http.Request{Method: r.Method, RemoteAddr: r.RemoteAddr, URL: r.URL, Host: r.Host}
	tun := &tunnel{sess: sess, target: tgt, refusal: ref}
	p.intercept(conn, tun, func() {
		if !tun.answered.Load() {
			a := answerFor(ref)
			p.observeRefusal(connect, sess, tgt, a.status, a.reason, a.code)
		}
	})
}

// intercept terminates the agent's TLS with a leaf for the target and
// hands the connection to the inner server. The connection stays
// tracked by the session until it is closed, whoever closes it (the
// inner server, an upgraded exchange, or the session ending); then
// closed (nil: nothing) runs.
func (p *Proxy) intercept(conn net.Conn, tun *tunnel, closed func()) {
	raw := &trackedConn{Conn: conn}
	tlsConn := tls.Server(raw, &tls.Config{
		GetCertificate: p.deps.leaves.GetCertificateFor(tun.target.host),
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	})
	p.tunnels.add(tlsConn, tun)
	untrack := tun.sess.Track(tlsConn)
	if closed != nil {
		forget := untrack
		untrack = func() { forget(); closed() }
	}
	raw.setUntrack(untrack)
	if !p.innerLn.push(tlsConn) {
		tlsConn.Close()
		p.tunnels.remove(tlsConn)
	}
}

// relay copies bytes both ways for an unmatched host the operator
// chose to let through, or through service (empty: none), one that
// says intercept: false; nothing is inspected or injected.
func (p *Proxy) relay(client, upstream net.Conn, sess *sessions.Session, tgt target, from, service string) {
	p.deps.exchanges.begin()
	defer p.deps.exchanges.end() // deferred first: ends after the entry
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
	duration := time.Since(start)
	p.logger.Info("tunnel relayed",
		zap.String("session", sess.ID), zap.String("target", tgt.String()), zap.String("service", service),
		zap.Int64("bytes_up", up), zap.Int64("bytes_down", down), zap.Duration("duration", duration))
	if p.deps.observe != nil {
		p.deps.observe.Observe(&activity.Entry{At: start.Add(duration), Session: sess.ID, Agent: sess.Agent, Service: service, Method: http.MethodConnect,
			Host: tgt.host, Port: tgt.port, Status: http.StatusOK, Decision: activity.Forwarded, BytesIn: up, BytesOut: down,
			Duration: duration, Client: from})
	}
}

// serveInner handles a request that arrived inside an intercepted
// tunnel.
func (p *Proxy) serveInner(w http.ResponseWriter, r *http.Request) {
	tun, ok := r.Context().Value(tunnelKey{}).(*tunnel)
	if !ok {
		refuseEarly(w, r, &refusal{status: http.StatusInternalServerError, reason: "tunnel state lost"})
		return
	}
	if tun.refusal != nil {
		// A tunnel to a host nothing covers (refuseInTunnel): every
		// request in it gets the reason, and nothing leaves. HTTP/1
		// closes after the answer; an HTTP/2 connection stays until
		// its client or the idle timeout ends it.
		tun.answered.Store(true)
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		p.refuseRequest(w, r, tun.sess, tun.target, tun.refusal)
		return
	}
	if r.Method == http.MethodConnect {
		// A tunnel inside the tunnel (or HTTP/2's extended CONNECT)
		// would be a raw channel nothing scans, in both directions.
		p.refuseRequest(w, r, tun.sess, tun.target, &refusal{status: http.StatusMethodNotAllowed, reason: "CONNECT inside an intercepted tunnel is not supported"})
		return
	}
	// An open tunnel is refused too while the state database is down:
	// its session may have been revoked elsewhere.
	if err := stateHealthy(p.deps.state); err != nil {
		p.refuseRequest(w, r, tun.sess, tun.target, err)
		return
	}
	// The CONNECT line fixed the target; SNI was checked against it in
	// the handshake and the Host header must agree too.
	host, port, err := hostname.Normalize(r.Host, 443)
	if err != nil || host != tun.target.host || port != tun.target.port {
		p.refuseRequest(w, r, tun.sess, tun.target, &refusal{status: http.StatusMisdirectedRequest,
			reason: fmt.Sprintf("request Host %q does not match the tunnel's target %s", r.Host, tun.target)})
		return
	}
	p.forward(w, r, tun.sess, tun.target)
}

// tunnel is what the inner server knows about an intercepted
// connection.
type tunnel struct {
	sess   *sessions.Session
	target target
	// refusal, when set, answers every request in the tunnel (a host
	// no in-scope service covers); answered records that one was.
	refusal  *refusal
	answered atomic.Bool
}

type tunnelKey struct{}

// tunnelTable maps the intercepted connections the inner server holds
// to their tunnels, so that each request finds its session and target.
type tunnelTable struct{ m sync.Map } // *tls.Conn -> *tunnel

func (t *tunnelTable) add(c *tls.Conn, tun *tunnel) { t.m.Store(c, tun) }
func (t *tunnelTable) remove(c net.Conn)            { t.m.Delete(c) }

// count is how many intercepted connections the table holds (the
// agent_vault_tunnels_open gauge).
func (t *tunnelTable) count() int {
	n := 0
	t.m.Range(func(any, any) bool { n++; return true })
	return n
}

// context is the inner server's ConnContext.
func (t *tunnelTable) context(ctx context.Context, c net.Conn) context.Context {
	if tun, ok := t.m.Load(c); ok {
		return context.WithValue(ctx, tunnelKey{}, tun.(*tunnel))
	}
	return ctx
}

// state is the inner server's ConnState: a connection leaves the table
// once the server is done with it, closed or hijacked (an upgraded
// WebSocket lives on outside the server, still tracked by its session
// until it closes).
func (t *tunnelTable) state(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateClosed, http.StateHijacked:
		t.remove(c)
	}
}

// trackedConn is an intercepted connection's transport. Closing it, by
// whatever path, tells the session to forget it.
type trackedConn struct {
	net.Conn
	mu      sync.Mutex
	closed  bool
	untrack func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	f := c.untrack
	c.closed, c.untrack = true, nil
	c.mu.Unlock()
	if f != nil {
		f()
	}
	return err
}

// setUntrack records how to forget the connection; if it already
// closed, it forgets it at once.
func (c *trackedConn) setUntrack(f func()) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		f()
		return
	}
	c.untrack = f
	c.mu.Unlock()
}

// establish takes the agent's connection over and answers its CONNECT
// with 200; false when that failed (logged, the connection closed).
func (p *Proxy) establish(w http.ResponseWriter) (net.Conn, bool) {
	conn, err := hijack(w)
	if err != nil {
		p.logger.Error("hijacking CONNECT", zap.Error(err))
		return nil, false
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		conn.Close()
		return nil, false
	}
	return conn, true
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
