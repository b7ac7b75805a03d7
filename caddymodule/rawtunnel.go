package caddymodule

// A CONNECT that only services with intercept: false cover (in the
// session's scope) is relayed as raw bytes: the agent's TLS reaches
// the upstream itself, so it sees the upstream's own certificate
// (clients that pin certificates work) and the tunnel costs no TLS
// interception. The proxy reads only the ClientHello, and relays the
// tunnel only when its SNI names the CONNECT's host: otherwise a raw
// tunnel opened for an allowed host could carry a TLS session to any
// other name the same address serves (domain fronting).

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/clienthello"
	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

// rawHelloTimeout bounds the wait for a relayed tunnel's ClientHello,
// which a TLS client sends as soon as the CONNECT is answered.
const rawHelloTimeout = 10 * time.Second

// TLS alert descriptions (RFC 8446 section 6) a refused relayed tunnel
// ends with: the agent's TLS library shows them ("tlsv1 unrecognized
// name"), where an answer it could read would need a TLS session of
// our own, which is what intercept: false is there to avoid.
const (
	alertAccessDenied   = 49
	alertDecodeError    = 50
	alertInternalError  = 80
	alertUnrecognizedNm = 112
)

// serveRawTunnel answers the CONNECT r with 200, reads the agent's
// ClientHello, checks its SNI against tgt and only then dials the
// upstream (through the egress dialer) and relays the tunnel, the
// ClientHello first. A refused tunnel is ended with a TLS alert; the
// upstream is never contacted, and the reason goes to the log and the
// activity log.
func (p *Proxy) serveRawTunnel(w http.ResponseWriter, r *http.Request, sess *sessions.Session, tgt target, svc *services.Compiled) {
	name := svc.Service.Name
	conn, ok := p.establish(w)
	if !ok {
		return
	}
	// Revoking the session while the hello is awaited closes conn,
	// which ends the read.
	untrack := sess.Track(conn)
	conn.SetReadDeadline(time.Now().Add(rawHelloTimeout))
	sni, hello, err := clienthello.Read(conn)
	conn.SetReadDeadline(time.Time{})
	untrack()
	if ref := checkRawSNI(name, tgt, sni, err); ref != nil {
		alert := byte(alertUnrecognizedNm)
		if err != nil {
			alert = alertDecodeError
		}
		p.refuseRawTunnel(conn, r, sess, tgt, name, ref, alert)
		return
	}
	upstream, err := p.dialer.DialContext(r.Context(), "tcp", tgt.hostPort())
	if err != nil {
		err = &upstreamFailure{target: tgt, err: err}
		alert := byte(alertInternalError)
		if answerFor(err).code == activity.CodeEgressPolicy {
			alert = alertAccessDenied
		}
		p.refuseRawTunnel(conn, r, sess, tgt, name, err, alert)
		return
	}
	client := &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(hello), conn)}
	p.relay(client, upstream, sess, tgt, clientHost(r.RemoteAddr), name)
}

// checkRawSNI is why a relayed tunnel of service may not go on (nil: it
// may): the agent sent no ClientHello (readErr), or one whose SNI is
// missing or names another host than the CONNECT. The comparison is
// exact but for ASCII case: tgt.host is a canonical name, and SNI
// carries no trailing dot (RFC 6066; crypto/tls refuses one), no port
// and no Unicode folding.
func checkRawSNI(service string, tgt target, sni string, readErr error) *refusal {
	switch {
	case readErr != nil:
		return &refusal{status: http.StatusBadRequest, code: activity.CodeBadRequest,
			reason: "service " + service + " relays tunnels without interception (intercept: false), and this one did not start with a TLS ClientHello: " + readErr.Error()}
	case sni == "":
		return &refusal{status: http.StatusBadRequest, code: activity.CodeBadRequest,
			reason: "service " + service + " relays tunnels without interception (intercept: false) only when the TLS ClientHello names the CONNECT's host, and this one names no server (SNI)"}
	case asciiLower(sni) != tgt.host:
		return &refusal{status: http.StatusMisdirectedRequest, code: activity.CodeMisdirected,
			reason: "the TLS ClientHello names " + hostname.Quote(sni) + " but the CONNECT was to " + tgt.host + ": service " + service + " relays tunnels without interception (intercept: false) only to the host both name"}
	}
	return nil
}

// asciiLower lowers ASCII letters only, so that no other character can
// fold into the target's.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// refuseRawTunnel ends a relayed tunnel of service the proxy refused:
// a fatal TLS alert, then the connection closes. The broker's log and
// the activity log carry the reason (the CONNECT's entry, with the
// status and code the refusal maps to).
func (p *Proxy) refuseRawTunnel(conn net.Conn, r *http.Request, sess *sessions.Session, tgt target, service string, err error, alert byte) {
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.Write([]byte{21, 3, 3, 0, 2, 2, alert}) // alert record: fatal, alert
	conn.Close()
	a := answerFor(err)
	p.logger.Info("relayed tunnel refused", zap.String("session", sess.ID), zap.String("target", tgt.String()),
		zap.String("service", service), zap.String("code", a.code), zap.String("reason", a.reason))
	if p.deps.observe != nil {
		e := refusalEntry(r, sess, tgt, a.status, a.reason, a.code)
		e.Service = service
		p.deps.observe.Observe(e)
	}
}
