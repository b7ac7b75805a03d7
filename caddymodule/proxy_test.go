package caddymodule

// In-process tests of the proxy's request pipeline (proxy.go), written as
// agent journeys against the harness in proxyharness_test.go. They pin
// today's observable behaviour: statuses, the refusal reasons that
// matter, what the upstream receives and what the agent sees.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/authguard"
	"github.com/agentvault/caddy-agent-vault/caddymodule/scrub"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Secrets start and end with characters no placeholder contains, so the
// redactor can always show the agent its placeholder (it masks a
// replacement that could spell a secret together with its neighbours).
const (
	bearerSecret = "Sbearer-Q7xK2mL9-Z"
	otherSecret  = "Sother-H3jV6cN0-Z"
	apiKeySecret = "Sapi/key?+&=#Z"     // changes under path and query escaping
	userSecret   = "Suser-Y2bT5-Z"      // a basic auth user name from a template
	passSecret   = "Spass+/word=Z"      // "bot:"+passSecret encodes with padding
	querySecret  = "Sq key+/=&Z"        // changes under query escaping
	echoSecret   = `S-live/+&<"x">\ 0Z` // changes under every escaping the proxy knows
)

// builtin is a store without a sync engine holding name, value pairs.
func builtin(kv ...string) memStore {
	s := memStore{name: "builtin", values: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.values[kv[i]] = kv[i+1]
	}
	return s
}

func bearer(name, host, cred string) services.Service {
	return services.Service{Name: name, Host: host, Auth: services.Auth{Type: services.AuthBearer, Token: cred}}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// 1. The session token authenticates the agent to the proxy, as the
// password of the proxy URL (Basic) or as a Bearer token. Anything else
// is a 407 asking for credentials, and no upstream is contacted.
func TestPipelineProxyAuth(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
		stores:   []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})
	valid := pl.session(t)
	revoked := pl.session(t)
	pl.revoke(t, revoked)

	wantProxyAuthRequired := func(t *testing.T, a answer, reason string) {
		t.Helper()
		wantRefusal(t, a, http.StatusProxyAuthRequired, "proxy authentication required: "+reason)
		if got := a.header.Get("Proxy-Authenticate"); got != `Basic realm="agent-vault"` {
			t.Errorf("Proxy-Authenticate %q", got)
		}
	}
	for _, tc := range []struct{ name, auth, reason string }{
		{"none", "", "no Proxy-Authorization header"},
		{"malformed", "Bearer", "malformed Proxy-Authorization header"},
		{"malformed Basic", "Basic !!!", "malformed Basic Proxy-Authorization header"},
		{"unsupported scheme", "Digest " + valid.token, "unsupported Proxy-Authorization scheme"},
		{"unknown token", basicAuth("avs_notARealSessionToken"), "unknown session token"},
		{"revoked session", basicAuth(revoked.token), "session revoked"},
	} {
		t.Run("CONNECT/"+tc.name, func(t *testing.T) {
			a, _ := pl.connect(t, up.hostPort, tc.auth)
			wantProxyAuthRequired(t, a, tc.reason)
		})
	}
	t.Run("CONNECT/expired session", func(t *testing.T) {
		s := pl.sessionFor(t, "1m")
		pl.setSessionClock(2 * time.Minute)
		defer pl.setSessionClock(0)
		a, _ := pl.connect(t, up.hostPort, basicAuth(s.token))
		wantProxyAuthRequired(t, a, "session expired")
	})
	t.Run("authentication comes before the target is looked at", func(t *testing.T) {
		a, _ := pl.connect(t, "bad..host:443", "")
		wantProxyAuthRequired(t, a, "no Proxy-Authorization header")
	})
	t.Run("absolute-form http:// without a token", func(t *testing.T) {
		a, _ := pl.raw(t, http.MethodGet, "GET "+up.http("/")+" HTTP/1.1\r\nHost: "+up.hostPort+"\r\n\r\n")
		wantProxyAuthRequired(t, a, "no Proxy-Authorization header")
	})
	if n := up.dials.Load(); n != 0 {
		t.Fatalf("the upstream was dialled %d times by unauthenticated requests", n)
	}

	for _, tc := range []struct{ name, auth string }{
		{"Basic av:token", basicAuth(valid.token)},
		{"Basic with the token as user name", "Basic " + b64(valid.token+":")},
		{"Bearer", "Bearer " + valid.token},
	} {
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			a, conn := pl.connect(t, up.hostPort, tc.auth)
			if a.status != http.StatusOK {
				t.Fatalf("CONNECT: %d %q", a.status, a.body)
			}
			tlsConn := tls.Client(conn, &tls.Config{ServerName: "127.0.0.1", RootCAs: pl.agentRoots})
			c := &tunnelClient{t: t, conn: tlsConn, br: bufio.NewReader(tlsConn), host: up.hostPort}
			wantStatus(t, c.get("/user", up.hostPort), http.StatusOK)
			if got := up.last(t).header.Get("Authorization"); got != "Bearer "+bearerSecret {
				t.Fatalf("upstream got Authorization %q", got)
			}
		})
	}
}

// While the state database is unreachable past max_stale the proxy
// forwards nothing (it may have missed a revocation): new tunnels and
// requests inside open ones get 503 with the reason (or the open ones
// are closed); once it is back, the same session works again.
func TestPipelineStateDatabaseDown(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
		stores:   []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})
	s := pl.session(t)
	a, conn := pl.connect(t, up.hostPort, basicAuth(s.token))
	if a.status != http.StatusOK {
		t.Fatalf("CONNECT: %d %q", a.status, a.body)
	}
	tlsConn := tls.Client(conn, &tls.Config{ServerName: "127.0.0.1", RootCAs: pl.agentRoots})
	open := &tunnelClient{t: t, conn: tlsConn, br: bufio.NewReader(tlsConn), host: up.hostPort}
	wantStatus(t, open.get("/user", up.hostPort), http.StatusOK)
	hits := len(up.requests())

	// The database's own error names its user, database, host and
	// port: for the log, not for clients, which may not even be
	// authenticated.
	const detail = "state postgres: ping: failed to connect to `user=pgtest database=test`: 127.0.0.1:41451"
	pl.setStateDown(errors.New(detail))
	const reason = "the state database is unreachable, so agent-vault refuses requests until it is back: state sqlite: database unreachable for more than 1m"
	a, _ = pl.connect(t, up.hostPort, basicAuth(s.token))
	wantRefusal(t, a, http.StatusServiceUnavailable, reason)
	a, _ = pl.connect(t, up.hostPort, "") // no credentials at all
	wantRefusal(t, a, http.StatusServiceUnavailable, reason)
	// The open tunnel answers 503 too, unless the health guard has
	// closed it already (it closes open connections once unhealthy).
	if a, err := open.send(http.MethodGet, "/user", up.hostPort); err == nil {
		wantRefusal(t, a, http.StatusServiceUnavailable, reason)
	} else if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a request in the open tunnel: %v", err)
	}
	status, body := pl.healthz()
	for _, leak := range []string{"pgtest", "database=test", "41451", "127.0.0.1"} {
		if strings.Contains(a.body, leak) || strings.Contains(body, leak) {
			t.Fatalf("a client sees the database's detail %q: proxy %q, /healthz %d %q", leak, a.body, status, body)
		}
	}
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "state sqlite: database unreachable") {
		t.Fatalf("/healthz: %d %q", status, body)
	}
	eventually(t, 5*time.Second, "the log has the database's detail", func() bool {
		return strings.Contains(pl.logs.String(), "41451")
	})
	if len(up.requests()) != hits {
		t.Fatal("a request reached the upstream while the state database was down")
	}

	pl.setStateDown(nil)
	a, _ = pl.connect(t, up.hostPort, basicAuth(s.token))
	if a.status != http.StatusOK {
		t.Fatalf("CONNECT after recovery: %d %q", a.status, a.body)
	}
}

// The same against a real PostgreSQL that stops: once max_stale has
// passed without contact the proxy refuses with 503 naming the backend,
// and when the server is back the same session works again, with
// nothing restarted.
func TestPipelineStateDatabaseStops(t *testing.T) {
	pg := pgtest.Start(t)
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services:    []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
		stores:      []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
		postgresDSN: pg.DSN(),
	})
	s := pl.session(t)
	connectStatus := func() (int, string) {
		a, conn := pl.connect(t, up.hostPort, basicAuth(s.token))
		if conn != nil {
			conn.Close()
		}
		return a.status, a.body
	}
	if status, body := connectStatus(); status != http.StatusOK {
		t.Fatalf("CONNECT: %d %q", status, body)
	}
	pg.Stop(t)
	waitForConnect(t, connectStatus, http.StatusServiceUnavailable, "the state database is unreachable, so agent-vault refuses requests until it is back: state postgres: ")
	if strings.Contains(pl.logs.String(), pg.Password()) {
		t.Fatal("the DSN password is in the log")
	}
	pg.Start(t)
	waitForConnect(t, connectStatus, http.StatusOK, "")
}

// waitForConnect polls connect until it answers status with a body
// containing want, or fails the test after 30s.
func waitForConnect(t *testing.T, connect func() (int, string), status int, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, body := connect()
		if got == status && strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CONNECT kept answering %d %q, want %d with %q", got, body, status, want)
		}
		time.Sleep(100 * time.Millisecond) // the poll's pace, not a synchronisation
	}
}

// 2. In deny mode (the default) a CONNECT is accepted only for a host an
// in-scope service covers; anything else is refused before any upstream
// is dialled.
func TestPipelineConnectScope(t *testing.T) {
	upA, upB, stray := upstreamTLS(t, nil), upstreamTLS(t, nil), upstreamTLS(t, nil)
	for _, mode := range []string{"", "deny"} {
		t.Run("unmatched="+mode, func(t *testing.T) {
			pl := newPipeline(t, pipelineConfig{
				services:  []services.Service{bearer("a", upA.hostPort, "A_TOKEN"), bearer("b", upB.hostPort, "B_TOKEN")},
				stores:    []storebackends.Store{builtin("A_TOKEN", bearerSecret, "B_TOKEN", otherSecret)},
				unmatched: mode,
			})
			onlyA := pl.session(t, "a")
			dialsB, dialsStray := upB.dials.Load(), stray.dials.Load()

			// The CONNECT opens a tunnel whose every request is
			// answered with the reason, inside the agent's TLS.
			a, _ := pl.connect(t, stray.hostPort, basicAuth(onlyA.token))
			wantStatus(t, a, http.StatusOK)
			agentA := pl.agent(t, onlyA, false)
			a = get(t, agentA, stray.https("/x"))
			wantRefusal(t, a, http.StatusForbidden, "no service in this session's scope covers "+stray.hostPort+"; the proxy denies unknown hosts")
			a = get(t, agentA, upB.https("/x"))
			wantRefusal(t, a, http.StatusForbidden, "no service in this session's scope covers "+upB.hostPort)
			if got := a.header.Get("X-Agent-Vault-Refusal"); got != "uncovered_host" {
				t.Errorf("X-Agent-Vault-Refusal %q, want uncovered_host", got)
			}
			if upB.dials.Load() != dialsB || stray.dials.Load() != dialsStray {
				t.Fatal("a refused CONNECT dialled its target")
			}

			a = get(t, pl.agent(t, onlyA, false), upA.https("/in-scope"))
			wantStatus(t, a, http.StatusOK)
			if got := upA.last(t).header.Get("Authorization"); got != "Bearer "+bearerSecret {
				t.Fatalf("service a got Authorization %q", got)
			}
		})
	}

	t.Run("an out-of-scope service on an in-scope host is not used", func(t *testing.T) {
		pl := newPipeline(t, pipelineConfig{
			services: []services.Service{bearer("wide", upA.hostPort, "A_TOKEN"), bearer("admin", upA.hostPort+"/admin/*", "B_TOKEN")},
			stores:   []storebackends.Store{builtin("A_TOKEN", bearerSecret, "B_TOKEN", otherSecret)},
		})
		for _, tc := range []struct {
			scope []string
			want  string
		}{
			{[]string{"wide"}, "Bearer " + bearerSecret},
			{nil, "Bearer " + otherSecret}, // all services: the narrower one wins
		} {
			wantStatus(t, get(t, pl.agent(t, pl.session(t, tc.scope...), false), upA.https("/admin/users")), http.StatusOK)
			if got := upA.last(t).header.Get("Authorization"); got != tc.want {
				t.Errorf("scope %v: upstream got Authorization %q, want %q", tc.scope, got, tc.want)
			}
		}
	})

	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("a", upA.hostPort, "A_TOKEN")},
		stores:   []storebackends.Store{builtin("A_TOKEN", bearerSecret)},
	})
	s := pl.session(t)
	auth := "Proxy-Authorization: " + basicAuth(s.token) + "\r\n"
	for _, tc := range []struct{ name, method, text, reason string }{
		{"CONNECT port out of range", http.MethodConnect,
			"CONNECT 127.0.0.1:99999 HTTP/1.1\r\nHost: 127.0.0.1:99999\r\n" + auth + "\r\n", "bad CONNECT target"},
		{"CONNECT to an empty label", http.MethodConnect,
			"CONNECT bad..host:443 HTTP/1.1\r\nHost: bad..host:443\r\n" + auth + "\r\n", "bad CONNECT target"},
		{"absolute-form to a bad host", http.MethodGet,
			"GET http://bad..host/ HTTP/1.1\r\nHost: bad..host\r\n" + auth + "\r\n", "bad target"},
		{"absolute-form https://", http.MethodGet,
			"GET " + upA.https("/") + " HTTP/1.1\r\nHost: " + upA.hostPort + "\r\n" + auth + "\r\n", "use CONNECT for https targets"},
		{"origin-form", http.MethodGet,
			"GET / HTTP/1.1\r\nHost: " + pl.addr + "\r\n" + auth + "\r\n", "send CONNECT or absolute-form http:// requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := pl.raw(t, tc.method, tc.text)
			wantRefusal(t, a, http.StatusBadRequest, tc.reason)
		})
	}
}

// 3. With unmatched: tunnel, a host no service covers is reachable but
// never gets a credential: a CONNECT is relayed byte for byte (the agent
// sees the upstream's own certificate), an absolute-form request is
// forwarded as sent, and a placeholder toward such a host is refused.
func TestPipelineUnmatchedTunnel(t *testing.T) {
	covered, stray, plainStray := upstreamTLS(t, nil), upstreamTLS(t, nil), upstreamHTTP(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services:  []services.Service{bearer("api", covered.hostPort, "API_TOKEN")},
		stores:    []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
		unmatched: "tunnel",
	})
	s := pl.session(t)
	agent := pl.agent(t, s, false)
	ph := s.ph(t, "API_TOKEN")

	t.Run("CONNECT to an uncovered host is relayed", func(t *testing.T) {
		a := get(t, agent, stray.https("/raw"), "X-Token", ph)
		wantStatus(t, a, http.StatusOK)
		if !a.tls.PeerCertificates[0].Equal(stray.cert) {
			t.Fatalf("the agent saw %q, not the upstream's own certificate", a.tls.PeerCertificates[0].Subject)
		}
		got := stray.last(t)
		if got.header.Get("Authorization") != "" || got.header.Get("X-Token") != ph {
			t.Fatalf("relayed request was changed: Authorization %q, X-Token %q", got.header.Get("Authorization"), got.header.Get("X-Token"))
		}
	})
	t.Run("a covered host is still intercepted", func(t *testing.T) {
		a := get(t, agent, covered.https("/api"))
		wantStatus(t, a, http.StatusOK)
		if err := a.tls.PeerCertificates[0].CheckSignatureFrom(pl.leafIssuer); err != nil {
			t.Fatalf("covered host not intercepted: %v", err)
		}
		if got := covered.last(t).header.Get("Authorization"); got != "Bearer "+bearerSecret {
			t.Fatalf("covered host got Authorization %q", got)
		}
	})
	t.Run("absolute-form http:// to an uncovered host is forwarded without injection", func(t *testing.T) {
		a := get(t, agent, plainStray.http("/plain?q=1"))
		wantStatus(t, a, http.StatusOK)
		got := plainStray.last(t)
		if got.path != "/plain" || got.rawQuery != "q=1" || got.header.Get("Authorization") != "" || got.header.Get("Proxy-Authorization") != "" {
			t.Fatalf("upstream got %s?%s with Authorization %q, Proxy-Authorization %q",
				got.path, got.rawQuery, got.header.Get("Authorization"), got.header.Get("Proxy-Authorization"))
		}
	})
	t.Run("a placeholder toward an uncovered host is refused", func(t *testing.T) {
		before := len(plainStray.requests())
		a := get(t, agent, plainStray.http("/leak"), "X-Token", ph)
		wantRefusal(t, a, http.StatusForbidden, "credential API_TOKEN is not bound to http://"+plainStray.hostPort)
		if len(plainStray.requests()) != before {
			t.Fatal("the refused request reached the upstream")
		}
	})
}

// 3b. The proxy never reaches the broker itself: even with loopback
// allowed and unmatched: tunnel, a CONNECT to the proxy's own listener
// (a nested CONNECT), under any local name, and an absolute-form
// request to it are refused, and a service pointed at it too.
func TestPipelineSelfEgress(t *testing.T) {
	other := upstreamHTTP(t, nil)
	pl := newPipeline(t, pipelineConfig{unmatched: "tunnel"})
	_, port, _ := net.SplitHostPort(pl.addr)
	s := pl.session(t)
	agent := pl.agent(t, s, false)

	for _, target := range []string{pl.addr, "localhost:" + port, "127.0.0.2:" + port, "[::1]:" + port, "0.0.0.0:" + port} {
		t.Run("CONNECT "+target, func(t *testing.T) {
			a, _ := pl.connect(t, target, basicAuth(s.token))
			wantRefusal(t, a, http.StatusForbidden, "the broker's own listener", "never connects to the broker itself")
			if strings.Contains(a.body, "allow_private_networks") {
				t.Errorf("refusal %q suggests an allow-list entry, which cannot open it", a.body)
			}
		})
	}
	t.Run("absolute-form http:// to the proxy", func(t *testing.T) {
		a := get(t, agent, "http://"+pl.addr+"/")
		wantRefusal(t, a, http.StatusForbidden, "the broker's own listener")
	})
	t.Run("another loopback port still tunnels", func(t *testing.T) {
		a := get(t, agent, other.http("/ok"))
		wantStatus(t, a, http.StatusOK)
	})
}

// 4. An intercepted tunnel goes only where its CONNECT said: the TLS
// server name and the Host header of every request must name the same
// host. Inside, the agent may speak h2 or HTTP/1.1.
func TestPipelineTunnelIntegrity(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
		stores:   []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})
	s := pl.session(t)
	_, port, _ := net.SplitHostPort(up.hostPort)

	t.Run("SNI other than the CONNECT target fails the handshake", func(t *testing.T) {
		for _, sni := range []string{"evil.example", "localhost"} {
			_, conn := pl.connect(t, up.hostPort, basicAuth(s.token))
			// The agent skips verification, so only the proxy can fail it.
			tlsConn := tls.Client(conn, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
			if err := tlsConn.Handshake(); err == nil {
				t.Fatalf("SNI %q accepted in a tunnel to %s", sni, up.hostPort)
			}
		}
	})
	t.Run("Host header other than the target is misdirected", func(t *testing.T) {
		tun := pl.openTunnel(t, s, up.hostPort)
		for _, host := range []string{"127.0.0.1:1", "localhost:" + port, "127.0.0.1"} {
			wantRefusal(t, tun.get("/", host), http.StatusMisdirectedRequest,
				fmt.Sprintf("request Host %q does not match the tunnel's target https://%s", host, up.hostPort))
		}
		up.wantNothing(t)
		wantStatus(t, tun.get("/", up.hostPort), http.StatusOK)
	})
	t.Run("ALPN", func(t *testing.T) {
		for _, tc := range []struct {
			offer []string
			want  string
		}{
			{[]string{"h2", "http/1.1"}, "h2"},
			{[]string{"http/1.1"}, "http/1.1"},
		} {
			_, conn := pl.connect(t, up.hostPort, basicAuth(s.token))
			tlsConn := tls.Client(conn, &tls.Config{ServerName: "127.0.0.1", RootCAs: pl.agentRoots, NextProtos: tc.offer})
			if err := tlsConn.Handshake(); err != nil {
				t.Fatal(err)
			}
			if got := tlsConn.ConnectionState().NegotiatedProtocol; got != tc.want {
				t.Errorf("offered %v, negotiated %q, want %q", tc.offer, got, tc.want)
			}
		}
		for _, tc := range []struct {
			h2    bool
			proto string
		}{{true, "HTTP/2.0"}, {false, "HTTP/1.1"}} {
			a := get(t, pl.agent(t, s, tc.h2), up.https("/alpn"))
			wantStatus(t, a, http.StatusOK)
			if a.proto != tc.proto || a.body != "upstream ok" {
				t.Errorf("agent got %s %q, want %s", a.proto, a.body, tc.proto)
			}
			if got := up.last(t).header.Get("Authorization"); got != "Bearer "+bearerSecret {
				t.Errorf("over %s the upstream got Authorization %q", tc.proto, got)
			}
		}
	})
}

// 5. A service with a path pattern covers only those paths, and a path
// an upstream could route differently from how the pattern reads it
// (dot segments, encoded slashes, ';' parameters) never matches.
func TestPipelinePathPatterns(t *testing.T) {
	up := upstreamTLS(t, nil)
	cfg := pipelineConfig{
		services: []services.Service{{Name: "api", Host: up.hostPort + "/api/*",
			Auth: services.Auth{Type: services.AuthBearer, Token: "API_TOKEN"}}},
		stores: []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	}
	pl := newPipeline(t, cfg)
	s := pl.session(t)
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/api/v1/items", true},
		{"/api/", true},
		{"/api", false},
		{"/admin", false},
		{"/api/../admin", false},
		{"/api/./v1", false},
		{"/api/%2e%2e/admin", false},
		{"/api/%2E%2E/admin", false},
		{"/api/a%2fb", false},
		{"/api/a%2Fb", false},
		{"/api/a%5cb", false},
		{"/api/v1;x", false},
		{"/api/v1%3bx", false},
		{"/api/..;/admin", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			before := len(up.requests())
			a := pl.openTunnel(t, s, up.hostPort).get(tc.path, up.hostPort)
			if !tc.ok {
				wantRefusal(t, a, http.StatusForbidden, "no service in this session's scope covers https://"+up.hostPort+tc.path)
				if len(up.requests()) != before {
					t.Fatal("the refused request reached the upstream")
				}
				return
			}
			wantStatus(t, a, http.StatusOK)
			if got := up.last(t); got.path != tc.path || got.header.Get("Authorization") != "Bearer "+bearerSecret {
				t.Fatalf("upstream got %s with Authorization %q", got.path, got.header.Get("Authorization"))
			}
		})
	}

	t.Run("unmatched tunnel does not forward an intercepted request no service matches", func(t *testing.T) {
		cfg.unmatched = "tunnel"
		pl := newPipeline(t, cfg)
		s := pl.session(t)
		before := len(up.requests())
		a := pl.openTunnel(t, s, up.hostPort).get("/admin", up.hostPort)
		wantRefusal(t, a, http.StatusForbidden, "no service in this session's scope covers https://"+up.hostPort+"/admin")
		if len(up.requests()) != before {
			t.Fatal("the refused request reached the upstream")
		}
	})
}

// 6. A placeholder the agent puts in a request is swapped for the secret,
// wherever it is, but only toward a service that uses that credential,
// only for the session it was issued to, and never over cleartext to a
// service that does not allow it.
func TestPipelinePlaceholders(t *testing.T) {
	api, other, plain := upstreamTLS(t, nil), upstreamTLS(t, nil), upstreamHTTP(t, nil)
	apiKey := services.Auth{Type: services.AuthAPIKey, Key: "API_KEY"}
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			{Name: "api", Host: api.hostPort, Auth: apiKey},
			bearer("other", other.hostPort, "OTHER_TOKEN"),
			{Name: "plain", Host: plain.hostPort, Auth: apiKey},
		},
		stores: []storebackends.Store{builtin("API_KEY", apiKeySecret, "OTHER_TOKEN", otherSecret)},
	})
	s := pl.session(t)
	agent := pl.agent(t, s, false)
	ph := s.ph(t, "API_KEY")

	for _, tc := range []struct {
		where string
		req   *http.Request
		check func(seenRequest) bool
	}{
		{"header", newRequest(t, api.https("/v1"), "X-Forwarded-Key", "key="+ph),
			func(r seenRequest) bool { return r.header.Get("X-Forwarded-Key") == "key="+apiKeySecret }},
		{"path", newRequest(t, api.https("/v1/"+ph+"/items")),
			func(r seenRequest) bool { return r.path == "/v1/"+url.PathEscape(apiKeySecret)+"/items" }},
		{"query", newRequest(t, api.https("/v1?k="+ph+"&x=1")),
			func(r seenRequest) bool { return r.rawQuery == "k="+url.QueryEscape(apiKeySecret)+"&x=1" }},
		{"Basic userinfo", newRequest(t, "https://bot:"+ph+"@"+api.hostPort+"/v1"),
			func(r seenRequest) bool { return r.header.Get("Authorization") == "Basic "+b64("bot:"+apiKeySecret) }},
	} {
		t.Run("swapped in the "+tc.where, func(t *testing.T) {
			wantStatus(t, do(t, agent, tc.req), http.StatusOK)
			got := api.last(t)
			if !tc.check(got) {
				t.Fatalf("upstream got path %q query %q headers %v", got.path, got.rawQuery, got.header)
			}
			if got.header.Get("X-Api-Key") != apiKeySecret {
				t.Fatalf("service auth not injected alongside: %q", got.header.Get("X-Api-Key"))
			}
		})
	}

	stranger := pl.session(t)
	unknown, err := services.NewPlaceholder()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		up       *upstream
		url      string
		header   []string
		status   int
		fragment string
	}{
		{"another session's placeholder", api, api.https("/v1"), []string{"X-Forwarded-Key", stranger.ph(t, "API_KEY")},
			http.StatusForbidden, "the request carries a placeholder that does not belong to this session"},
		{"a placeholder no session issued", api, api.https("/v1"), []string{"X-Forwarded-Key", unknown},
			http.StatusForbidden, "the request carries a placeholder that does not belong to this session"},
		{"a placeholder for a credential the service does not use", api, api.https("/v1"), []string{"X-Forwarded-Key", s.ph(t, "OTHER_TOKEN")},
			http.StatusForbidden, "credential OTHER_TOKEN is not bound to https://" + api.hostPort},
		{"a placeholder in a header name", api, api.https("/v1"), []string{"X-" + ph, "1"},
			http.StatusForbidden, "request refused: header name"},
		{"a placeholder over cleartext to a service without allow_cleartext", plain, plain.http("/v1"), []string{"X-Forwarded-Key", ph},
			http.StatusForbidden, "service plain injects a credential and does not allow cleartext http; use https"},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			before := len(tc.up.requests())
			wantRefusal(t, get(t, agent, tc.url, tc.header...), tc.status, tc.fragment)
			if len(tc.up.requests()) != before {
				t.Fatal("the refused request reached the upstream")
			}
		})
	}
	other.wantNothing(t)
}

// 7. Each auth type puts the credential where the service expects it,
// replacing whatever the agent sent there; Proxy-Authorization never
// reaches an upstream.
func TestPipelineInjection(t *testing.T) {
	up := upstreamTLS(t, nil)
	stores := []storebackends.Store{builtin("TOKEN", bearerSecret, "USER_NAME", userSecret, "PASS", passSecret, "KEY", apiKeySecret, "Q", querySecret)}
	watched := []string{"Authorization", "X-Api-Key", "X-Auth", "X-One", "X-Two", "Proxy-Authorization"}
	for _, tc := range []struct {
		name      string
		auth      services.Auth
		query     string            // the agent's query
		sent      []string          // header pairs the agent sends
		want      map[string]string // watched header -> the one value upstream gets; others absent
		wantQuery url.Values
	}{
		{"bearer", services.Auth{Type: services.AuthBearer, Token: "TOKEN"}, "",
			[]string{"Authorization", "Bearer agents-own"},
			map[string]string{"Authorization": "Bearer " + bearerSecret}, nil},
		{"basic with a templated user name", services.Auth{Type: services.AuthBasic, Username: "{{ USER_NAME }}", Password: "PASS"}, "",
			[]string{"Authorization", "Basic " + b64("me:mine")},
			map[string]string{"Authorization": "Basic " + b64(userSecret+":"+passSecret)}, nil},
		{"basic with a literal user name", services.Auth{Type: services.AuthBasic, Username: "bot", Password: "PASS"}, "", nil,
			map[string]string{"Authorization": "Basic " + b64("bot:"+passSecret)}, nil},
		{"api-key in the default header", services.Auth{Type: services.AuthAPIKey, Key: "KEY"}, "",
			[]string{"x-api-key", "mine"},
			map[string]string{"X-Api-Key": apiKeySecret}, nil},
		{"api-key in a custom header with a prefix", services.Auth{Type: services.AuthAPIKey, Key: "KEY", Header: "x-auth", Prefix: "Token "}, "",
			[]string{"X-Auth", "mine"},
			map[string]string{"X-Auth": "Token " + apiKeySecret}, nil},
		{"custom headers", services.Auth{Type: services.AuthCustom, Headers: map[string]string{"X-One": "id={{ USER_NAME }}", "x-two": "{{ USER_NAME }}:{{ PASS }}"}}, "",
			[]string{"X-Two", "mine"},
			map[string]string{"X-One": "id=" + userSecret, "X-Two": userSecret + ":" + passSecret}, nil},
		{"query parameter", services.Auth{Type: services.AuthQuery, Key: "Q", Param: "api_key"}, "?api_key=mine&b=2", nil,
			map[string]string{}, url.Values{"api_key": {querySecret}, "b": {"2"}}},
		{"passthrough", services.Auth{Type: services.AuthPassthrough}, "?b=2",
			[]string{"Authorization", "Bearer agents-own", "X-Api-Key", "mine"},
			map[string]string{"Authorization": "Bearer agents-own", "X-Api-Key": "mine"}, url.Values{"b": {"2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := newPipeline(t, pipelineConfig{
				services: []services.Service{{Name: "svc", Host: up.hostPort, Auth: tc.auth}},
				stores:   stores,
			})
			// A Proxy-Authorization inside the tunnel must not get through either.
			sent := append([]string{"Proxy-Authorization", basicAuth("avs_insideTheTunnel")}, tc.sent...)
			wantStatus(t, get(t, pl.agent(t, pl.session(t), false), up.https("/inject"+tc.query), sent...), http.StatusOK)
			got := up.last(t)
			for _, h := range watched {
				values := got.header.Values(h)
				if want, ok := tc.want[h]; ok {
					if !slices.Equal(values, []string{want}) {
						t.Errorf("%s: upstream got %q, want [%q]", h, values, want)
					}
				} else if len(values) > 0 {
					t.Errorf("%s: upstream got %q, want none", h, values)
				}
			}
			if tc.wantQuery != nil {
				q, err := url.ParseQuery(got.rawQuery)
				if err != nil || !equalValues(q, tc.wantQuery) {
					t.Errorf("upstream query %q, want %v", got.rawQuery, tc.wantQuery)
				}
			}
		})
	}

	t.Run("absolute-form http:// never forwards Proxy-Authorization", func(t *testing.T) {
		plain := upstreamHTTP(t, nil)
		pl := newPipeline(t, pipelineConfig{
			services: []services.Service{{Name: "svc", Host: plain.hostPort, AllowCleartext: true, Auth: services.Auth{Type: services.AuthBearer, Token: "TOKEN"}}},
			stores:   stores,
		})
		wantStatus(t, get(t, pl.agent(t, pl.session(t), false), plain.http("/inject")), http.StatusOK)
		got := plain.last(t)
		if got.header.Get("Proxy-Authorization") != "" || got.header.Get("Authorization") != "Bearer "+bearerSecret {
			t.Fatalf("upstream got Proxy-Authorization %q, Authorization %q", got.header.Get("Proxy-Authorization"), got.header.Get("Authorization"))
		}
	})
}

func equalValues(a, b url.Values) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// 8. A credential whose synced store is past its max_staleness is not
// used: 503 naming the credential, and the request is not forwarded.
// The same for a credential no store holds.
func TestPipelineFreshness(t *testing.T) {
	up := upstreamTLS(t, nil)
	vault := newSyncedStore("vault", map[string]string{"VAULT_TOKEN": bearerSecret, "A_TOKEN": userSecret, "B_TOKEN": passSecret})
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			bearer("vaulted", up.hostPort+"/vaulted/*", "VAULT_TOKEN"),
			{Name: "pair", Host: up.hostPort + "/pair/*", Auth: services.Auth{Type: services.AuthCustom,
				Headers: map[string]string{"X-A": "{{ A_TOKEN }}", "X-B": "{{ B_TOKEN }}"}}},
			bearer("missing", up.hostPort+"/missing/*", "NOWHERE_TOKEN"),
		},
		stores: []storebackends.Store{vault},
	})
	s := pl.session(t)
	agent := pl.agent(t, s, false)
	wantNotForwarded := func(t *testing.T, a answer, before int, fragment string) {
		t.Helper()
		wantRefusal(t, a, http.StatusServiceUnavailable, fragment)
		if len(up.requests()) != before {
			t.Fatal("the refused request reached the upstream")
		}
	}

	wantStatus(t, get(t, agent, up.https("/vaulted/x")), http.StatusOK)
	stale := errors.New(`store "vault" is past its max_staleness (last sync 2h ago)`)
	vault.setStale(stale)
	t.Run("injected credential", func(t *testing.T) {
		wantNotForwarded(t, get(t, agent, up.https("/vaulted/x")), len(up.requests()), "credential VAULT_TOKEN cannot be used: "+stale.Error())
	})
	t.Run("placeholder", func(t *testing.T) {
		// The placeholder step refuses first, naming the placeholder's
		// credential; the injection check would name A_TOKEN (name order).
		wantNotForwarded(t, get(t, agent, up.https("/pair/x"), "X-Echo", s.ph(t, "B_TOKEN")), len(up.requests()), "credential B_TOKEN cannot be used: "+stale.Error())
		wantNotForwarded(t, get(t, agent, up.https("/pair/x")), len(up.requests()), "credential A_TOKEN cannot be used: "+stale.Error())
	})
	t.Run("no store holds it", func(t *testing.T) {
		wantNotForwarded(t, get(t, agent, up.https("/missing/x")), len(up.requests()), "credential NOWHERE_TOKEN is not available")
	})
	t.Run("fresh again", func(t *testing.T) {
		vault.setStale(nil)
		wantStatus(t, get(t, agent, up.https("/pair/x")), http.StatusOK)
		if got := up.last(t); got.header.Get("X-A") != userSecret || got.header.Get("X-B") != passSecret {
			t.Fatalf("upstream got X-A %q X-B %q", got.header.Get("X-A"), got.header.Get("X-B"))
		}
	})
}

// echoHandler answers with the Authorization it received, in the place
// and form its path names: what a careless or hostile upstream does.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	tok := strings.TrimPrefix(auth, "Bearer ")
	switch r.URL.Path {
	case "/body":
		body := "you sent: " + auth
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		io.WriteString(w, body)
	case "/header":
		w.Header().Set("X-Echo", auth)
		io.WriteString(w, "ok")
	case "/trailer":
		w.Header().Set("Trailer", "X-Echo")
		io.WriteString(w, "body\n")
		w.Header().Set("X-Echo", auth)
	case "/long":
		body := longBody(tok)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		io.WriteString(w, body)
	case "/stream": // chunked, the secret split across two flushes
		half := len(tok) / 2
		io.WriteString(w, "data: "+tok[:half])
		http.NewResponseController(w).Flush()
		io.WriteString(w, tok[half:]+"\n\n")
		http.NewResponseController(w).Flush()
		io.WriteString(w, "data: end\n\n")
	case "/escaped":
		io.WriteString(w, escapedForms(tok))
	case "/early":
		w.Header().Set("Link", "<https://cdn.example/"+tok+">")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	case "/br":
		w.Header().Set("Content-Encoding", "br")
		io.WriteString(w, "\x8b\x02\x80hello\x03")
	default:
		http.NotFound(w, r)
	}
}

// longBody is over the 256 KiB the proxy scans in one piece, with s at
// the start, across the 32 KiB copy buffer's edge and at the end.
func longBody(s string) string {
	return s + strings.Repeat(".", 32<<10-7) + s + strings.Repeat(".", 300<<10) + s
}

// escapedForms is s as an echo of a URL or a JSON string would hold it.
func escapedForms(s string) string {
	html, _ := json.Marshal(s)
	var plain strings.Builder
	enc := json.NewEncoder(&plain)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return fmt.Sprintf("query=%s path=%s json=%s html=%s", url.QueryEscape(s), url.PathEscape(s),
		strings.Trim(strings.TrimSpace(plain.String()), `"`), strings.Trim(string(html), `"`))
}

// 9. Whatever an upstream echoes of a secret it was sent, in the body
// (short, long, streamed), a header, a trailer, an early hint, escaped
// or Basic-encoded, the agent sees the placeholder or the redaction
// mark instead. A response the proxy cannot scan is refused.
func TestPipelineRedaction(t *testing.T) {
	echo, basic, built, open := upstreamTLS(t, echoHandler), upstreamTLS(t, echoHandler), upstreamTLS(t, echoHandler), upstreamTLS(t, echoHandler)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			bearer("echo", echo.hostPort, "ECHO_TOKEN"),
			{Name: "basic", Host: basic.hostPort, Auth: services.Auth{Type: services.AuthBasic, Username: "bot", Password: "PASS"}},
			{Name: "built", Host: built.hostPort, Auth: services.Auth{Type: services.AuthCustom, Headers: map[string]string{"X-Unused": "{{ PASS }}"}}},
			{Name: "open", Host: open.hostPort, Auth: services.Auth{Type: services.AuthPassthrough}},
		},
		stores: []storebackends.Store{builtin("ECHO_TOKEN", echoSecret, "PASS", passSecret)},
	})
	s := pl.session(t)
	agent := pl.agent(t, s, false)
	ph := s.ph(t, "ECHO_TOKEN")
	noSecret := func(t *testing.T, a answer) {
		t.Helper()
		all := fmt.Sprint(a.status, a.header, a.trailer, a.body)
		for _, secret := range []string{echoSecret, url.QueryEscape(echoSecret), passSecret, b64("bot:" + passSecret)} {
			if strings.Contains(all, secret) {
				t.Fatalf("the agent saw %q", secret)
			}
		}
	}

	for _, tc := range []struct {
		path   string
		length int64 // Content-Length the agent sees
		check  func(answer) bool
	}{
		{"/body", int64(len("you sent: Bearer " + ph)), func(a answer) bool { return a.body == "you sent: Bearer "+ph }},
		{"/header", 2, func(a answer) bool { return a.header.Get("X-Echo") == "Bearer "+ph }},
		{"/trailer", -1, func(a answer) bool { return a.body == "body\n" && a.trailer.Get("X-Echo") == "Bearer "+ph }},
		{"/long", -1, func(a answer) bool { return a.body == longBody(ph) }},
		{"/stream", -1, func(a answer) bool { return a.body == "data: "+ph+"\n\ndata: end\n\n" }},
		{"/escaped", int64(len(escapedForms(ph))), func(a answer) bool { return a.body == escapedForms(ph) }},
	} {
		t.Run(tc.path, func(t *testing.T) {
			a := get(t, agent, echo.https(tc.path))
			wantStatus(t, a, http.StatusOK)
			noSecret(t, a)
			if !tc.check(a) {
				t.Fatalf("agent saw header %v trailer %v body %.200q", a.header, a.trailer, a.body)
			}
			if a.length != tc.length {
				t.Errorf("Content-Length %d, want %d", a.length, tc.length)
			}
		})
	}

	t.Run("/early", func(t *testing.T) {
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, h.Get("Link"))
			return nil
		}}
		req := newRequest(t, echo.https("/early")).WithContext(httptrace.WithClientTrace(context.Background(), trace))
		wantStatus(t, do(t, agent, req), http.StatusOK)
		if !slices.Equal(hints, []string{"<https://cdn.example/" + ph + ">"}) {
			t.Fatalf("103 Link headers %q", hints)
		}
	})
	t.Run("Basic blob", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			url  string
		}{
			{"injected by the service", basic.https("/body")},
			{"built by the agent from a placeholder", "https://bot:" + s.ph(t, "PASS") + "@" + built.hostPort + "/body"},
		} {
			a := get(t, agent, tc.url)
			wantStatus(t, a, http.StatusOK)
			noSecret(t, a)
			if a.body != "you sent: Basic "+scrub.Redacted {
				t.Errorf("%s: agent saw %q", tc.name, a.body)
			}
		}
		if got := built.last(t).header.Get("Authorization"); got != "Basic "+b64("bot:"+passSecret) {
			t.Fatalf("agent's Basic header reached the upstream as %q", got)
		}
	})
	t.Run("Accept-Encoding is replaced and Range dropped when a secret was sent", func(t *testing.T) {
		sent := []string{"Accept-Encoding", "br", "Range", "bytes=0-3", "If-Range", `"v1"`}
		wantStatus(t, get(t, agent, echo.https("/body"), sent...), http.StatusOK)
		got := echo.last(t)
		// Only what the proxy can decode and scan: identity or one gzip.
		if got.header.Get("Accept-Encoding") != "identity, gzip" || got.header.Get("Range") != "" || got.header.Get("If-Range") != "" {
			t.Fatalf("upstream got Accept-Encoding %q Range %q If-Range %q",
				got.header.Get("Accept-Encoding"), got.header.Get("Range"), got.header.Get("If-Range"))
		}
		// A passthrough request sends no secret, but its answer is
		// scanned too (the session can reach secrets: stored-and-read-
		// back), so the same rule applies.
		get(t, agent, open.https("/body"), sent...)
		if got = open.last(t); got.header.Get("Accept-Encoding") != "identity, gzip" || got.header.Get("Range") != "" {
			t.Fatalf("passthrough in a session with secrets: upstream got Accept-Encoding %q Range %q",
				got.header.Get("Accept-Encoding"), got.header.Get("Range"))
		}
		// Only a session that can reach no secret at all is left alone.
		bare := pl.agent(t, pl.session(t, "open"), false)
		get(t, bare, open.https("/body"), sent...)
		got = open.last(t)
		if got.header.Get("Accept-Encoding") != "br" || got.header.Get("Range") != "bytes=0-3" || got.header.Get("If-Range") != `"v1"` {
			t.Fatalf("session without secrets: upstream got Accept-Encoding %q Range %q If-Range %q",
				got.header.Get("Accept-Encoding"), got.header.Get("Range"), got.header.Get("If-Range"))
		}
	})
	t.Run("an encoded response is refused when it must be scanned", func(t *testing.T) {
		const reason = "upstream sent a br-encoded response that cannot be scanned for echoed credentials"
		wantRefusal(t, get(t, agent, echo.https("/br")), http.StatusBadGateway, reason)
		wantRefusal(t, get(t, agent, open.https("/br")), http.StatusBadGateway, reason)
		a := get(t, pl.agent(t, pl.session(t, "open"), false), open.https("/br"))
		wantStatus(t, a, http.StatusOK)
		if a.header.Get("Content-Encoding") != "br" {
			t.Fatalf("session without secrets: Content-Encoding %q", a.header.Get("Content-Encoding"))
		}
	})
}

// gzipped is s gzip-compressed; name goes in the gzip header's own
// file name field, which is not part of the decoded body.
func gzipped(s, name string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Name = name
	io.WriteString(zw, s)
	zw.Close()
	return b.Bytes()
}

// encodingHandler echoes the Authorization it received inside
// compressed bodies, under the Content-Encoding lines its path names.
func encodingHandler(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	tok := strings.TrimPrefix(auth, "Bearer ")
	echo := "you sent: " + auth
	send := func(body []byte, lines ...string) {
		w.Header()["Content-Encoding"] = lines
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	}
	switch r.URL.Path {
	case "/gzip":
		send(gzipped(echo, tok), "gzip")
	case "/gzip-identity": // identity is no coding: one gzip
		send(gzipped(echo, ""), "gzip", "identity")
	case "/gzip-two-lines": // really compressed twice
		send(gzipped(string(gzipped(echo, "")), ""), "gzip", "gzip")
	case "/gzip-br-two-lines":
		send(gzipped(echo, ""), "gzip", "br")
	case "/gzip-gzip-one-line":
		send(gzipped(string(gzipped(echo, "")), ""), "gzip, gzip")
	case "/zstd":
		send(gzipped(echo, ""), "zstd")
	case "/gzip-long": // short compressed, over the buffered bound decoded
		send(gzipped(longBody(tok), ""), "gzip")
	case "/gzip-long-stream": // unknown length, the compressed stream split across flushes
		z := gzipped(longBody(tok), "")
		w.Header().Set("Content-Encoding", "gzip")
		for i := 0; i < len(z); i += 1000 {
			w.Write(z[i:min(i+1000, len(z))])
			http.NewResponseController(w).Flush()
		}
	case "/gzip-bad-header":
		send([]byte("not gzip: "+echo), "gzip")
	case "/gzip-corrupt": // a valid header, then a damaged deflate stream
		z := gzipped(echo, "")
		for i := 10; i < len(z)-8; i++ {
			z[i] ^= 0x55
		}
		send(z, "gzip")
	case "/gzip-corrupt-stream": // decodes for a while, then fails its checksum
		z := gzipped(longBody(tok), "")
		z[len(z)-8] ^= 0xff
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(z[:len(z)/2])
		http.NewResponseController(w).Flush()
		w.Write(z[len(z)/2:])
	case "/gzip-truncated-stream":
		z := gzipped(longBody(tok), "")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(z[:len(z)-20])
	case "/gzip-no-body":
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", "123")
		status := http.StatusOK
		if r.Header.Get("X-Status") != "" {
			fmt.Sscan(r.Header.Get("X-Status"), &status)
		}
		w.WriteHeader(status)
	default:
		http.NotFound(w, r)
	}
}

// 9b. An upstream that received a secret may answer in one gzip
// coding, over any number of Content-Encoding lines (identity counts
// for nothing): the proxy decodes it, scans it and gives the agent
// identity. Any other coding or stack of codings is refused with 502,
// and a corrupt gzip stream never reaches the agent as a whole answer.
// Without a secret the upstream's answer passes untouched.
func TestPipelineContentEncoding(t *testing.T) {
	up, open := upstreamTLS(t, encodingHandler), upstreamTLS(t, encodingHandler)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			bearer("echo", up.hostPort, "ECHO_TOKEN"),
			{Name: "open", Host: open.hostPort, Auth: services.Auth{Type: services.AuthPassthrough}},
		},
		stores: []storebackends.Store{builtin("ECHO_TOKEN", echoSecret)},
	})
	s := pl.session(t)
	ph := s.ph(t, "ECHO_TOKEN")
	// The agent names the codings it takes itself, so its own transport
	// decodes nothing: what it reads is what the proxy sent.
	acceptGzip := []string{"Accept-Encoding", "gzip, br"}

	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			agent := pl.agent(t, s, h2)
			for _, tc := range []struct {
				path   string
				body   string // decoded body the agent reads; "" for a refusal
				length int64
				reason string // refusal fragment
			}{
				{"/gzip", "you sent: Bearer " + ph, int64(len("you sent: Bearer " + ph)), ""},
				// Decided: identity on its own line adds no coding, so this is one gzip.
				{"/gzip-identity", "you sent: Bearer " + ph, int64(len("you sent: Bearer " + ph)), ""},
				{"/gzip-long", longBody(ph), -1, ""},
				{"/gzip-long-stream", longBody(ph), -1, ""},
				{"/gzip-two-lines", "", 0, "upstream sent a gzip+gzip-encoded response that cannot be scanned"},
				{"/gzip-br-two-lines", "", 0, "upstream sent a gzip+br-encoded response that cannot be scanned"},
				{"/gzip-gzip-one-line", "", 0, "upstream sent a gzip+gzip-encoded response that cannot be scanned"},
				{"/zstd", "", 0, "upstream sent a zstd-encoded response that cannot be scanned"},
				{"/gzip-bad-header", "", 0, "upstream sent a gzip-encoded response that is not valid gzip"},
				{"/gzip-corrupt", "", 0, "reading the upstream response failed"},
			} {
				t.Run(tc.path, func(t *testing.T) {
					a := get(t, agent, up.https(tc.path), acceptGzip...)
					if got := up.last(t).header.Get("Accept-Encoding"); got != "identity, gzip" {
						t.Errorf("upstream got Accept-Encoding %q", got)
					}
					if strings.Contains(fmt.Sprint(a.header, a.body), echoSecret) || strings.Contains(a.body, "\x1f\x8b") {
						t.Fatalf("the agent saw the secret or gzip bytes: status %d, Content-Encoding %q", a.status, a.header.Values("Content-Encoding"))
					}
					if tc.body == "" {
						wantRefusal(t, a, http.StatusBadGateway, tc.reason)
						return
					}
					wantStatus(t, a, http.StatusOK)
					if a.header.Values("Content-Encoding") != nil || a.body != tc.body {
						t.Fatalf("agent saw Content-Encoding %q, body %.200q", a.header.Values("Content-Encoding"), a.body)
					}
					if a.length != tc.length {
						t.Errorf("Content-Length %d, want %d", a.length, tc.length)
					}
				})
			}

			for _, path := range []string{"/gzip-corrupt-stream", "/gzip-truncated-stream"} {
				t.Run(path, func(t *testing.T) {
					// The answer is under way when the stream breaks: the
					// agent must see the relay fail, not an answer that
					// looks whole.
					resp, err := agent.Do(newRequest(t, up.https(path), acceptGzip...))
					if err != nil {
						t.Logf("failed before the status, nothing relayed: %v", err)
						return
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if strings.Contains(string(body), echoSecret) || bytes.Contains(body, []byte{0x1f, 0x8b}) {
						t.Fatalf("the agent saw the secret or gzip bytes")
					}
					if err == nil && resp.StatusCode != http.StatusBadGateway {
						t.Fatalf("status %d and a body of %d bytes read without error", resp.StatusCode, len(body))
					}
				})
			}

			t.Run("no body", func(t *testing.T) {
				for _, tc := range []struct {
					method string
					status string
				}{{http.MethodHead, ""}, {http.MethodGet, "204"}, {http.MethodGet, "304"}} {
					req := newRequest(t, up.https("/gzip-no-body"), append(acceptGzip, "X-Status", tc.status)...)
					req.Method = tc.method
					a := do(t, agent, req)
					want := map[string]int{"": 200, "204": 204, "304": 304}[tc.status]
					wantStatus(t, a, want)
					// As the same GET would be: decoded, of unknown length.
					if a.header.Values("Content-Encoding") != nil || a.header.Get("Content-Length") != "" {
						t.Errorf("%s %s: agent saw Content-Encoding %q Content-Length %q", tc.method, tc.status,
							a.header.Values("Content-Encoding"), a.header.Get("Content-Length"))
					}
				}
			})

			t.Run("no secret: passed untouched", func(t *testing.T) {
				plain := pl.agent(t, pl.session(t, "open"), h2)
				a := get(t, plain, open.https("/gzip"), acceptGzip...)
				wantStatus(t, a, http.StatusOK)
				if got := open.last(t).header.Get("Accept-Encoding"); got != "gzip, br" {
					t.Fatalf("upstream got Accept-Encoding %q", got)
				}
				want := string(gzipped("you sent: ", ""))
				if !slices.Equal(a.header.Values("Content-Encoding"), []string{"gzip"}) || a.body != want || a.length != int64(len(want)) {
					t.Fatalf("agent saw Content-Encoding %q Content-Length %d body %q", a.header.Values("Content-Encoding"), a.length, a.body)
				}
				a = get(t, plain, open.https("/gzip-two-lines"), acceptGzip...)
				wantStatus(t, a, http.StatusOK)
				if !slices.Equal(a.header.Values("Content-Encoding"), []string{"gzip", "gzip"}) {
					t.Fatalf("agent saw Content-Encoding %q", a.header.Values("Content-Encoding"))
				}
				// An agent that asks for no coding is not given one by the proxy.
				tr := plain.Transport.(*http.Transport).Clone()
				tr.DisableCompression = true
				t.Cleanup(tr.CloseIdleConnections)
				get(t, &http.Client{Transport: tr}, open.https("/gzip"))
				if got := open.last(t).header.Values("Accept-Encoding"); got != nil {
					t.Fatalf("upstream got Accept-Encoding %q from an agent that sent none", got)
				}
			})
		})
	}
}

// 10. Upstream failures are told to the agent without the request's
// secrets; an upstream on a private address the operator did not allow
// is refused before it is dialled.
func TestPipelineUpstreamErrors(t *testing.T) {
	down := closedAddr(t)
	query := services.Auth{Type: services.AuthQuery, Key: "Q", Param: "key"}
	stores := []storebackends.Store{builtin("Q", querySecret, "API_TOKEN", bearerSecret)}

	t.Run("unreachable upstream", func(t *testing.T) {
		pl := newPipeline(t, pipelineConfig{
			services: []services.Service{{Name: "down", Host: down, Auth: query, AllowCleartext: true}},
			stores:   stores,
		})
		agent := pl.agent(t, pl.session(t), false)
		for _, scheme := range []string{"https", "http"} {
			a := get(t, agent, scheme+"://"+down+"/v1?x=1")
			wantRefusal(t, a, http.StatusBadGateway, "upstream "+scheme+"://"+down+" failed: ", "connection refused")
			for _, form := range []string{querySecret, url.QueryEscape(querySecret)} {
				if strings.Contains(a.body, form) {
					t.Fatalf("the error shows the query secret: %q", a.body)
				}
			}
		}
	})

	up := upstreamTLS(t, nil)
	loopbackRefused := "upstream address 127.0.0.1 is a loopback address; refused (allow it with allow_private_networks in the agent_vault app)"
	t.Run("private address not allowed", func(t *testing.T) {
		pl := newPipeline(t, pipelineConfig{
			services:   []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
			stores:     stores,
			publicOnly: true,
		})
		wantRefusal(t, get(t, pl.agent(t, pl.session(t), false), up.https("/v1")), http.StatusForbidden, loopbackRefused)
		if n := up.dials.Load(); n != 0 {
			t.Fatalf("the refused upstream was dialled %d times", n)
		}
	})
	t.Run("unmatched tunnel", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			publicOnly bool
			target     string
			status     int
			fragment   string
		}{
			{"private address not allowed", true, up.hostPort, http.StatusForbidden, loopbackRefused},
			{"unreachable", false, down, http.StatusBadGateway, "upstream https://" + down + " failed: "},
		} {
			pl := newPipeline(t, pipelineConfig{stores: stores, unmatched: "tunnel", publicOnly: tc.publicOnly})
			a, _ := pl.connect(t, tc.target, basicAuth(pl.session(t).token))
			wantRefusal(t, a, tc.status, tc.fragment)
		}
		if n := up.dials.Load(); n != 0 {
			t.Fatalf("the refused upstream was dialled %d times", n)
		}
	})
}

// 11. Over cleartext http:// a credential goes only to a service that
// allows it; a service that injects nothing is forwarded either way.
func TestPipelineCleartext(t *testing.T) {
	up := upstreamHTTP(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			{Name: "clear", Host: up.hostPort + "/clear/*", AllowCleartext: true, Auth: services.Auth{Type: services.AuthBearer, Token: "API_TOKEN"}},
			bearer("tls-only", up.hostPort+"/tls-only/*", "API_TOKEN"),
			{Name: "open", Host: up.hostPort + "/open/*", Auth: services.Auth{Type: services.AuthPassthrough}},
		},
		stores: []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})
	agent := pl.agent(t, pl.session(t), false)

	wantStatus(t, get(t, agent, up.http("/clear/x")), http.StatusOK)
	if got := up.last(t).header.Get("Authorization"); got != "Bearer "+bearerSecret {
		t.Fatalf("allow_cleartext service got Authorization %q", got)
	}
	wantStatus(t, get(t, agent, up.http("/open/x"), "Authorization", "Bearer agents-own"), http.StatusOK)
	if got := up.last(t).header.Get("Authorization"); got != "Bearer agents-own" {
		t.Fatalf("passthrough service got Authorization %q", got)
	}

	before := len(up.requests())
	wantRefusal(t, get(t, agent, up.http("/tls-only/x")), http.StatusForbidden,
		"service tls-only injects a credential and does not allow cleartext http; use https")
	wantRefusal(t, get(t, agent, up.http("/elsewhere")), http.StatusForbidden,
		"no service in this session's scope covers http://"+up.hostPort+"/elsewhere")
	// No CONNECT checks scope here: the request itself must.
	wantRefusal(t, get(t, pl.agent(t, pl.session(t, "open"), false), up.http("/clear/x")), http.StatusForbidden,
		"no service in this session's scope covers http://"+up.hostPort+"/clear/x")
	if len(up.requests()) != before {
		t.Fatal("a refused request reached the upstream")
	}
}

// 12. Ending a session closes its open tunnels, intercepted or relayed,
// and a session that has ended gets nothing through a tunnel it opened.
func TestPipelineSessionEnd(t *testing.T) {
	up, stray := upstreamTLS(t, nil), upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services:  []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
		stores:    []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
		unmatched: "tunnel",
	})
	// wantClosed reads until the proxy closes the connection; the
	// deadline set by pl.connect only bounds a broken test.
	wantClosed := func(t *testing.T, c *tunnelClient) {
		t.Helper()
		_, err := c.br.ReadByte()
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("tunnel still open after revocation: %v", err)
		}
		if _, err := c.send(http.MethodGet, "/after", c.host); err == nil {
			t.Fatal("a request after revocation got an answer")
		}
	}

	t.Run("revoking closes an intercepted tunnel", func(t *testing.T) {
		s := pl.session(t)
		tun := pl.openTunnel(t, s, up.hostPort)
		wantStatus(t, tun.get("/before", up.hostPort), http.StatusOK)
		before := len(up.requests())
		pl.revoke(t, s)
		wantClosed(t, tun)
		if len(up.requests()) != before {
			t.Fatal("a request after revocation reached the upstream")
		}
	})
	t.Run("revoking closes a relayed tunnel", func(t *testing.T) {
		s := pl.session(t)
		a, conn := pl.connect(t, stray.hostPort, basicAuth(s.token))
		if a.status != http.StatusOK {
			t.Fatalf("CONNECT: %d %q", a.status, a.body)
		}
		tlsConn := tls.Client(conn, &tls.Config{ServerName: "127.0.0.1", RootCAs: pl.agentRoots})
		tun := &tunnelClient{t: t, conn: tlsConn, br: bufio.NewReader(tlsConn), host: stray.hostPort}
		wantStatus(t, tun.get("/before", stray.hostPort), http.StatusOK)
		if !tlsConn.ConnectionState().PeerCertificates[0].Equal(stray.cert) {
			t.Fatal("uncovered host was intercepted, not relayed")
		}
		pl.revoke(t, s)
		wantClosed(t, tun)
	})
	t.Run("a session that expired while its tunnel was open", func(t *testing.T) {
		// The registry's clock lags two hours: it accepts the token at
		// CONNECT, while by the proxy's clock the session ended an hour
		// ago, as when a session expires with its tunnel open.
		pl.setSessionClock(-2 * time.Hour)
		defer pl.setSessionClock(0)
		s := pl.sessionFor(t, "1h")
		tun := pl.openTunnel(t, s, up.hostPort)
		before := len(up.requests())
		wantRefusal(t, tun.get("/late", up.hostPort), http.StatusForbidden, "session revoked or expired")
		if len(up.requests()) != before {
			t.Fatal("the expired session's request reached the upstream")
		}
	})
}

// A stream of bad tokens from one address: past the budget the answers
// carry Retry-After and the log gets one summary line instead of one
// per failure, while a valid session from the same address still works.
func TestPipelineAuthFailuresLimited(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{bearer("api", up.hostPort, "API_TOKEN")},
		stores:   []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})
	valid := pl.session(t)
	const attempts = authguard.DefaultBurst + 30
	limited := 0
	for i := 0; i < attempts; i++ {
		a, conn := pl.connect(t, up.hostPort, basicAuth("avs_notARealSessionToken"))
		conn.Close()
		if a.status != http.StatusProxyAuthRequired {
			t.Fatalf("attempt %d: status %d", i, a.status)
		}
		if a.header.Get("Retry-After") != "" {
			limited++
		}
	}
	if limited < attempts-authguard.DefaultBurst-5 {
		t.Errorf("%d of %d answers past the budget carried Retry-After", limited, attempts-authguard.DefaultBurst)
	}
	a, conn := pl.connect(t, up.hostPort, basicAuth(valid.token))
	conn.Close()
	if a.status != http.StatusOK {
		t.Fatalf("a valid session from the limited address: %d %s", a.status, a.body)
	}
	if n := strings.Count(pl.logs.String(), "proxy authentication failed"); n > authguard.DefaultBurst+2 {
		t.Errorf("%d log lines for %d failures: not sampled", n, attempts)
	}
}

// An absolute-form http:// request is not inside a tunnel: the session
// tracks the request itself, so revoking it ends a stream it carries.
func TestPipelineRevokeEndsAbsoluteFormStream(t *testing.T) {
	up := upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // streams until the proxy lets go
	})
	svc := bearer("events", up.hostPort, "API_TOKEN")
	svc.AllowCleartext = true
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{svc},
		stores:   []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})
	s := pl.session(t)
	resp, err := pl.agent(t, s, false).Get("http://" + up.hostPort + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: 1\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	pl.revoke(t, s)
	// The client's 30 s timeout only bounds a broken test: the stream
	// must end because the session did, not because the client gave up.
	_, err = io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || strings.Contains(fmt.Sprint(err), "Client.Timeout") {
		t.Fatalf("the stream outlived its session: %v", err)
	}
}
