package caddymodule

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// rawService is a passthrough service with intercept: false.
func rawService(name, host string) services.Service {
	return services.Service{Name: name, Host: host, Auth: services.Auth{Type: services.AuthPassthrough}, Intercept: new(bool)}
}

// localhostOf is the upstream's address by name (its certificate names
// localhost): a relayed tunnel needs a name for its SNI.
func localhostOf(u *upstream) string {
	_, port, _ := net.SplitHostPort(u.hostPort)
	return "localhost:" + port
}

// rawHandshake CONNECTs to target and runs TLS in the tunnel with
// serverName as SNI ("" sends none), trusting what agents trust.
func (pl *pipeline) rawHandshake(t *testing.T, s agentSession, target, serverName string) (*tls.Conn, error) {
	t.Helper()
	a, conn := pl.connect(t, target, basicAuth(s.token))
	if a.status != http.StatusOK {
		t.Fatalf("CONNECT %s: %d %s", target, a.status, a.body)
	}
	cfg := &tls.Config{ServerName: serverName, RootCAs: pl.agentRoots}
	if serverName == "" {
		cfg.InsecureSkipVerify = true // the only way a Go client sends no SNI for a name
	}
	tc := tls.Client(conn, cfg)
	return tc, tc.Handshake()
}

// A service with intercept: false relays its tunnels raw: the agent's
// TLS reaches the upstream (it sees the upstream's own certificate),
// nothing is injected, and the activity log has one entry for the
// tunnel with the service, the bytes and the duration.
func TestPipelineRawTunnel(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{services: []services.Service{rawService("pinned", localhostOf(up))}})
	s := pl.session(t)

	agent := pl.agent(t, s, true)
	a := get(t, agent, "https://"+localhostOf(up)+"/pinned", "X-Seen", "by the upstream")
	wantStatus(t, a, http.StatusOK)
	if a.body != "upstream ok" || !a.tls.PeerCertificates[0].Equal(up.cert) {
		t.Fatalf("the agent saw %q from %q, not the upstream's own certificate", a.body, a.tls.PeerCertificates[0].Subject)
	}
	if got := up.last(t); got.path != "/pinned" || got.header.Get("X-Seen") != "by the upstream" {
		t.Fatalf("the upstream got %s %v", got.path, got.header)
	}
	agent.Transport.(*http.Transport).CloseIdleConnections() // ends the tunnel
	e := findEntry(t, pl, "the relayed tunnel", func(e activity.Entry) bool { return e.Method == http.MethodConnect })
	if e.Service != "pinned" || e.Decision != activity.Forwarded || e.Status != http.StatusOK || e.Host != "localhost" ||
		e.Session != s.id || e.BytesIn <= 0 || e.BytesOut <= 0 || e.Duration <= 0 || e.Code != "" {
		t.Errorf("relayed tunnel's entry: %+v", e)
	}
	if !strings.Contains(pl.logs.String(), `"tunnel relayed"`) {
		t.Error("the log has no line for the relayed tunnel")
	}
}

// A relayed tunnel goes only where its SNI and its CONNECT agree; else
// it ends with a TLS alert, the upstream is never dialled, and the
// refusal is logged with its reason.
func TestPipelineRawTunnelRefusals(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{services: []services.Service{rawService("pinned", localhostOf(up))}})
	s := pl.session(t)
	target := localhostOf(up)

	cases := []struct {
		what, sni string
		alert     string
		status    int
		code      string
		reason    string
	}{
		{"another name", "other.localhost", "unrecognized name", http.StatusMisdirectedRequest, activity.CodeMisdirected,
			`the TLS ClientHello names "other.localhost" but the CONNECT was to localhost`},
		{"no SNI", "", "unrecognized name", http.StatusBadRequest, activity.CodeBadRequest, "names no server (SNI)"},
	}
	for _, tc := range cases {
		t.Run(tc.what, func(t *testing.T) {
			_, err := pl.rawHandshake(t, s, target, tc.sni)
			if err == nil || !strings.Contains(err.Error(), tc.alert) {
				t.Fatalf("handshake: %v, want the alert %q", err, tc.alert)
			}
			e := findEntry(t, pl, tc.what, func(e activity.Entry) bool { return strings.Contains(e.Reason, tc.reason) })
			if e.Service != "pinned" || e.Status != tc.status || e.Code != tc.code || e.Decision != activity.Refused || e.Method != http.MethodConnect {
				t.Errorf("entry %+v", e)
			}
		})
	}
	t.Run("not TLS", func(t *testing.T) {
		a, conn := pl.connect(t, target, basicAuth(s.token))
		wantStatus(t, a, http.StatusOK)
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
		got, _ := io.ReadAll(conn) // the alert, then EOF
		if string(got) != "\x15\x03\x03\x00\x02\x02\x32" {
			t.Errorf("got %q, want a decode_error alert", got)
		}
		e := findEntry(t, pl, "not TLS", func(e activity.Entry) bool { return strings.Contains(e.Reason, "did not start with a TLS ClientHello") })
		if e.Code != activity.CodeBadRequest || e.Service != "pinned" {
			t.Errorf("entry %+v", e)
		}
	})
	t.Run("the case of the SNI does not matter", func(t *testing.T) {
		tc, err := pl.rawHandshake(t, s, target, "LocalHost")
		if err != nil {
			t.Fatal(err)
		}
		tc.Close()
		// The refused ones never reached it; this one did.
		if n := up.dials.Load(); n != 1 {
			t.Errorf("the upstream accepted %d connections, want 1 (the refused tunnels never dial it)", n)
		}
	})
	up.wantNothing(t)
	if logs := pl.logs.String(); !strings.Contains(logs, `"relayed tunnel refused"`) || !strings.Contains(logs, "other.localhost") {
		t.Errorf("the log does not say why:\n%s", logs)
	}
}

// Scope and precedence: a raw service out of the session's scope
// covers nothing (the host is refused in the tunnel as any uncovered
// host), and where an intercepting service in scope covers the same
// host, interception wins and the credential is injected.
func TestPipelineRawTunnelScope(t *testing.T) {
	up := upstreamTLS(t, nil)
	target := localhostOf(up)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{rawService("pinned", target), bearer("api", target, "API_TOKEN"), bearer("other", "api.example.com", "API_TOKEN")},
		stores:   []storebackends.Store{builtin("API_TOKEN", bearerSecret)},
	})

	t.Run("the URL tester says which", func(t *testing.T) {
		var m apiwire.ServiceMatch
		pl.must(t, pl.admin(), "GET", "/api/v1/services/match?url="+url.QueryEscape("https://"+target+"/x"), nil, 200, &m)
		if strings.Contains(m.Reason, "without interception") {
			t.Errorf("an intercepting service covers it too: %+v", m)
		}
		solo := newPipeline(t, pipelineConfig{services: []services.Service{rawService("pinned", target)}})
		solo.must(t, solo.admin(), "GET", "/api/v1/services/match?url="+url.QueryEscape("https://"+target+"/x"), nil, 200, &m)
		if m.Service == nil || *m.Service != "pinned" || !strings.Contains(m.Reason, "relayed without interception (intercept: false)") {
			t.Errorf("raw alone: %+v", m)
		}
	})
	t.Run("out of scope", func(t *testing.T) {
		s := pl.session(t, "other")
		a := get(t, pl.agent(t, s, false), "https://"+target+"/")
		wantRefusal(t, a, http.StatusForbidden, "no service in this session's scope covers")
		up.wantNothing(t)
	})
	t.Run("interception wins", func(t *testing.T) {
		s := pl.session(t, "pinned", "api")
		a := get(t, pl.agent(t, s, false), "https://"+target+"/both")
		wantStatus(t, a, http.StatusOK)
		if err := a.tls.PeerCertificates[0].CheckSignatureFrom(pl.leafIssuer); err != nil {
			t.Fatalf("not intercepted: %v", err)
		}
		if got := up.last(t).header.Get("Authorization"); got != "Bearer "+bearerSecret {
			t.Fatalf("Authorization %q", got)
		}
	})
	t.Run("the raw service alone", func(t *testing.T) {
		s := pl.session(t, "pinned")
		a := get(t, pl.agent(t, s, false), "https://"+target+"/raw")
		wantStatus(t, a, http.StatusOK)
		if !a.tls.PeerCertificates[0].Equal(up.cert) {
			t.Fatal("not relayed raw")
		}
		if got := up.last(t).header.Get("Authorization"); got != "" {
			t.Fatalf("Authorization %q through a raw tunnel", got)
		}
	})
}

// Revoking the session closes its relayed tunnels.
func TestPipelineRawTunnelRevoked(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{services: []services.Service{rawService("pinned", localhostOf(up))}})
	s := pl.session(t)
	tc, err := pl.rawHandshake(t, s, localhostOf(up), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	pl.revoke(t, s)
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Fatal("the relayed tunnel is still open after revocation")
	}
}

// The egress policy applies to the relayed tunnel's dial: a host on a
// refused address ends the tunnel with access_denied, never dialled.
func TestPipelineRawTunnelEgress(t *testing.T) {
	up := upstreamTLS(t, nil)
	pl := newPipeline(t, pipelineConfig{services: []services.Service{rawService("pinned", localhostOf(up))}, publicOnly: true})
	s := pl.session(t)
	_, err := pl.rawHandshake(t, s, localhostOf(up), "localhost")
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("handshake: %v, want access denied", err)
	}
	e := findEntry(t, pl, "the refused dial", func(e activity.Entry) bool { return e.Method == http.MethodConnect })
	if e.Code != activity.CodeEgressPolicy || e.Service != "pinned" || e.Status != http.StatusForbidden {
		t.Errorf("entry %+v", e)
	}
	if n := up.dials.Load(); n != 0 {
		t.Errorf("the upstream was dialled %d times", n)
	}
}
