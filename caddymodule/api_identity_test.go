package caddymodule

// The management API's identities in-process (issue 10): who a token
// is, what an agent may mint, rotation, deletion and narrowing of
// agents, access requests, the audit trail, logins and their cookie,
// and session leases.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// identityPipeline is a pipeline with services github (bearer, a TLS
// upstream) and stripe and npm (passthrough), and the upstream.
func identityPipeline(t *testing.T) (*pipeline, *upstream) {
	up := upstreamTLS(t, nil)
	writable := newWritableStore()
	writable.Put("GITHUB_TOKEN", bearerSecret)
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			bearer("github", up.hostPort, "GITHUB_TOKEN"),
			{Name: "stripe", Host: "api.stripe.example", Auth: services.Auth{Type: services.AuthPassthrough}},
			{Name: "npm", Host: "registry.npm.example", Auth: services.Auth{Type: services.AuthPassthrough}},
		},
		stores: []storebackends.Store{writable},
	})
	return pl, up
}

func TestAPIPrincipalResolution(t *testing.T) {
	pl, _ := identityPipeline(t)
	agent := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	pl.createOperator(t, "vera", testPassword, "viewer")
	viewer := pl.login(t, "vera", testPassword)
	sess := pl.mint(t, asToken(agent.Token), apiwire.SessionRequest{TTL: "10m"})

	for _, c := range []struct {
		what   string
		call   apiCall
		method string
		path   string
		status int
		words  []string
	}{
		{"admin token", pl.admin(), "GET", "/api/v1/agents", 200, nil},
		{"agent token, own sessions", asToken(agent.Token), "GET", "/api/v1/sessions", 200, nil},
		{"agent token, services", asToken(agent.Token), "GET", "/api/v1/services", 403, []string{"an agent token may not GET /api/v1/services"}},
		{"viewer login", asToken(viewer.Token), "GET", "/api/v1/services", 200, nil},
		{"viewer login, a change", asToken(viewer.Token), "DELETE", "/api/v1/services/npm", 403, []string{"role viewer may not DELETE /api/v1/services/npm: needs admin"}},
		{"session token, itself", asToken(sess.Token), "GET", "/api/v1/session", 200, nil},
		{"session token, sessions", asToken(sess.Token), "GET", "/api/v1/sessions", 403, []string{"a session token"}},
		{"no token", apiCall{}, "GET", "/api/v1/services", 401, []string{"no credentials"}},
		{"an unknown admin-like token", asToken("ava_" + strings.Repeat("9", 64)), "GET", "/api/v1/services", 401, []string{"unknown"}},
		{"an unknown agent token", asToken("avt_" + strings.Repeat("A", 43)), "GET", "/api/v1/services", 401, nil},
		{"an unknown login token", asToken("avo_" + strings.Repeat("A", 43)), "GET", "/api/v1/services", 401, []string{"log in"}},
		{"an unknown session token", asToken("avs_" + strings.Repeat("A", 43)), "GET", "/api/v1/session", 401, nil},
		{"not a bearer header", apiCall{headers: []string{"Authorization", "Basic YWRtaW46eA=="}}, "GET", "/api/v1/services", 401, []string{"Bearer"}},
		{"public health", apiCall{}, "GET", "/healthz", 200, nil},
		{"public CA", asToken(agent.Token), "GET", "/api/v1/ca.pem", 200, nil},
	} {
		a := pl.call(t, c.call, c.method, c.path, nil)
		if a.status != c.status {
			t.Errorf("%s: %s %s = %d %s, want %d", c.what, c.method, c.path, a.status, a.body, c.status)
			continue
		}
		for _, w := range c.words {
			if !strings.Contains(a.errText(), w) {
				t.Errorf("%s: %q does not say %q", c.what, a.errText(), w)
			}
		}
		if a.status == 401 && a.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.what)
		}
	}

	// GET /api/v1/session: what av-launch needs, never the token.
	var own apiwire.Session
	pl.must(t, asToken(sess.Token), "GET", "/api/v1/session", nil, 200, &own)
	if own.ID != sess.ID || own.Agent != "ci-bot" || own.Token != "" || !strings.Contains(own.CAPEM, "BEGIN CERTIFICATE") ||
		own.ProxyURL == "" || own.Placeholders["GITHUB_TOKEN"] != sess.Placeholders["GITHUB_TOKEN"] {
		t.Errorf("GET /api/v1/session = %+v", own)
	}

	// An expired login is refused: the API's clock moves past it.
	pl.setSessionClock(defaultOperatorLoginTTL + time.Minute)
	wantAPIError(t, "an expired login", pl.call(t, asToken(viewer.Token), "GET", "/api/v1/services", nil), 401, "log in again")
	pl.setSessionClock(0)

	// A database failure while a token is looked up is 503, never 401
	// and never let through; its text does not repeat the database's.
	down := errors.New("state sqlite: database is locked by user=secretuser")
	pl.setIDs(func(ids identityStore) identityStore { return failingIDs{identityStore: ids, err: down} })
	for _, tok := range []string{agent.Token, viewer.Token} {
		a := pl.call(t, asToken(tok), "GET", "/api/v1/sessions", nil)
		if a.status != http.StatusServiceUnavailable || strings.Contains(a.body, "secretuser") {
			t.Errorf("token lookup with the database down: %d %s, want 503 without the database's text", a.status, a.body)
		}
	}
	// Neither the admin token nor a session token needs the database.
	pl.must(t, pl.admin(), "GET", "/api/v1/services", nil, 200, nil)
	pl.must(t, asToken(sess.Token), "GET", "/api/v1/session", nil, 200, nil)
	pl.setIDs(func(ids identityStore) identityStore { return ids })
	pl.must(t, asToken(agent.Token), "GET", "/api/v1/sessions", nil, 200, nil)
}

// failingIDs fails every token lookup with err (as identityDB marks it).
type failingIDs struct {
	identityStore
	err error
}

func (f failingIDs) AgentByTokenHash(context.Context, [32]byte) (state.AgentRow, bool, error) {
	return state.AgentRow{}, false, &stateError{f.err}
}

func (f failingIDs) LoginByTokenHash(context.Context, [32]byte) (state.LoginRow, state.OperatorRow, bool, error) {
	return state.LoginRow{}, state.OperatorRow{}, false, &stateError{f.err}
}

func TestAgentMinting(t *testing.T) {
	pl, up := identityPipeline(t)
	agent := pl.createAgent(t, "ci-bot", []string{"github", "npm"}, "1h")
	tok := asToken(agent.Token)
	for _, c := range []struct {
		what   string
		body   any
		status int
		text   string
	}{
		{"a service it may not use", apiwire.SessionRequest{Services: []string{"stripe"}}, 403,
			`agent ci-bot may not use service stripe: ask with POST /api/v1/requests {"service":"stripe"}`},
		{"one allowed, one not", apiwire.SessionRequest{Services: []string{"github", "stripe"}}, 403, "may not use service stripe"},
		{"above its max TTL", apiwire.SessionRequest{TTL: "2h"}, 403, "ttl 2h exceeds agent ci-bot's max_session_ttl 1h"},
		{"above the server's max TTL", apiwire.SessionRequest{TTL: "48h"}, 403, "exceeds agent ci-bot's max_session_ttl"},
		// Not allowed is checked before exists, so an agent cannot tell
		// which services exist by 400 against 403.
		{"an unknown service", apiwire.SessionRequest{Services: []string{"nosuch"}}, 403, `agent ci-bot may not use service nosuch`},
		{"an empty list", `{"services":[]}`, 400, `"services" is empty`},
		{"a bad TTL", apiwire.SessionRequest{TTL: "soon"}, 400, "ttl"},
		{"a negative TTL", apiwire.SessionRequest{TTL: "-1m"}, 400, "ttl"},
	} {
		wantAPIError(t, c.what, pl.call(t, tok, "POST", "/api/v1/sessions", c.body), c.status, c.text)
	}
	if n := len(pl.sessionsOf(t, "ci-bot")); n != 0 {
		t.Fatalf("refused mints left %d sessions", n)
	}

	// Omitted services: what it may use, never every service; the
	// default TTL is capped at its max.
	s := pl.mint(t, tok, apiwire.SessionRequest{})
	if !slices.Equal(s.Services, []string{"github", "npm"}) || s.Agent != "ci-bot" {
		t.Errorf("default session: services %v agent %q", s.Services, s.Agent)
	}
	if d := time.Until(s.ExpiresAt); d > time.Hour || d < 59*time.Minute {
		t.Errorf("default session lasts %v, want the agent's max 1h", d)
	}
	if s.LeaseTimeout != "" || s.LeaseExpiresAt != nil {
		t.Errorf("a session minted without a lease has one: %+v", s)
	}
	wantStatus(t, get(t, pl.agent(t, asAgentSession(s), false), up.https("/x"), "Authorization: Bearer "+s.Placeholders["GITHUB_TOKEN"]), 200)
	if got := up.last(t).header.Get("Authorization"); got != "Bearer "+bearerSecret {
		t.Errorf("the agent's session got %q injected", got)
	}
	leased := pl.mint(t, tok, apiwire.SessionRequest{Services: []string{"npm"}, TTL: "10m", Lease: true})
	if leased.LeaseTimeout != "30s" || leased.LeaseExpiresAt == nil || time.Until(*leased.LeaseExpiresAt) > 30*time.Second {
		t.Errorf("leased session: lease_timeout %q lease_expires_at %v", leased.LeaseTimeout, leased.LeaseExpiresAt)
	}

	// An agent whose services all went away cannot mint (and is told).
	lonely := pl.createAgent(t, "lonely", []string{"stripe"}, "")
	pl.must(t, pl.admin(), "DELETE", "/api/v1/services/stripe", nil, 204, nil)
	wantAPIError(t, "no service of the agent exists", pl.call(t, asToken(lonely.Token), "POST", "/api/v1/sessions", apiwire.SessionRequest{}), 403, "may use no service")

	// An agent sees and ends only its own sessions: another's is 404.
	other := pl.createAgent(t, "other-bot", []string{"*"}, "")
	theirs := pl.mint(t, asToken(other.Token), apiwire.SessionRequest{TTL: "10m", Lease: true})
	var list apiwire.SessionList
	pl.must(t, tok, "GET", "/api/v1/sessions", nil, 200, &list)
	for _, x := range list.Sessions {
		if x.Agent != "ci-bot" {
			t.Errorf("ci-bot lists session %s of %q", x.ID, x.Agent)
		}
	}
	if len(list.Sessions) != 2 {
		t.Errorf("ci-bot lists %d sessions, want its 2", len(list.Sessions))
	}
	wantAPIError(t, "DELETE another agent's session", pl.call(t, tok, "DELETE", "/api/v1/sessions/"+theirs.ID, nil), 404, "no session "+theirs.ID)
	wantAPIError(t, "renew another agent's session", pl.call(t, tok, "POST", "/api/v1/sessions/"+theirs.ID+"/renew", nil), 404, "no session "+theirs.ID)
	if st := pl.sessionStatus(t, theirs.ID); st != apiwire.SessionActive {
		t.Errorf("other-bot's session is %q after ci-bot's refused DELETE", st)
	}
	pl.must(t, tok, "DELETE", "/api/v1/sessions/"+s.ID, nil, 204, nil)
	if st := pl.sessionStatus(t, s.ID); st != apiwire.SessionRevoked {
		t.Errorf("ci-bot's own session is %q after its DELETE", st)
	}
	// An admin mints any scope, with no agent.
	adm := pl.mint(t, pl.admin(), apiwire.SessionRequest{Services: []string{"npm"}})
	if adm.Agent != "" {
		t.Errorf("the admin token's session names agent %q", adm.Agent)
	}
}

// sessionsOf lists the sessions of agent, as the admin sees them.
func (pl *pipeline) sessionsOf(t testing.TB, agent string) []apiwire.SessionInfo {
	t.Helper()
	var l apiwire.SessionList
	pl.must(t, pl.admin(), "GET", "/api/v1/sessions", nil, 200, &l)
	var out []apiwire.SessionInfo
	for _, s := range l.Sessions {
		if s.Agent == agent {
			out = append(out, s)
		}
	}
	return out
}

func TestAgentRotate(t *testing.T) {
	pl, _ := identityPipeline(t)
	a := pl.createAgent(t, "ci-bot", []string{"github"}, "")
	sess := pl.mint(t, asToken(a.Token), apiwire.SessionRequest{TTL: "10m"})
	var rot apiwire.Agent
	pl.must(t, pl.admin(), "POST", "/api/v1/agents/ci-bot/rotate", nil, 200, &rot)
	if !strings.HasPrefix(rot.Token, "avt_") || rot.Token == a.Token || !slices.Equal(rot.Services, []string{"github"}) {
		t.Fatalf("rotate answered %+v", rot)
	}
	wantAPIError(t, "the old token right after rotate", pl.call(t, asToken(a.Token), "GET", "/api/v1/sessions", nil), 401)
	pl.must(t, asToken(rot.Token), "GET", "/api/v1/sessions", nil, 200, nil)
	if st := pl.sessionStatus(t, sess.ID); st != apiwire.SessionActive {
		t.Errorf("a session minted before the rotation is %q", st)
	}
	wantAPIError(t, "rotate an unknown agent", pl.call(t, pl.admin(), "POST", "/api/v1/agents/nobody/rotate", nil), 404, "nobody")
	// Lists never show a token.
	for _, path := range []string{"/api/v1/agents", "/api/v1/agents/ci-bot"} {
		if b := pl.call(t, pl.admin(), "GET", path, nil).body; strings.Contains(b, rot.Token) || strings.Contains(b, `"token"`) {
			t.Errorf("GET %s shows a token: %s", path, b)
		}
	}
}

func TestAgentDeleteClosesTunnels(t *testing.T) {
	pl, up := identityPipeline(t)
	a := pl.createAgent(t, "ci-bot", []string{"github"}, "")
	other := pl.createAgent(t, "other-bot", []string{"github"}, "")
	s := pl.mint(t, asToken(a.Token), apiwire.SessionRequest{TTL: "10m"})
	keep := pl.mint(t, asToken(other.Token), apiwire.SessionRequest{TTL: "10m"})
	tun := pl.openTunnel(t, asAgentSession(s), up.hostPort)
	wantStatus(t, tun.get("/before", up.hostPort), 200)
	kept := pl.openTunnel(t, asAgentSession(keep), up.hostPort)

	pl.must(t, pl.admin(), "DELETE", "/api/v1/agents/ci-bot", nil, 204, nil)
	// Closed at once: by the time DELETE answered, not at the next sweep.
	tun.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tun.br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the deleted agent's tunnel is still open: %v", err)
	}
	wantStatus(t, kept.get("/still", up.hostPort), 200)
	if st := pl.sessionStatus(t, s.ID); st != apiwire.SessionRevoked {
		t.Errorf("the deleted agent's session is %q", st)
	}
	if row, ok, err := pl.db.Session(context.Background(), s.ID); err != nil || !ok || row.RevokedAt == nil {
		t.Errorf("the deleted agent's session in the store: %+v %v %v, want revoked", row, ok, err)
	}
	if ans, _ := pl.connect(t, up.hostPort, basicAuth(s.Token)); ans.status != http.StatusProxyAuthRequired {
		t.Errorf("the deleted agent's session at the proxy: %d", ans.status)
	}
	wantAPIError(t, "the deleted agent's token", pl.call(t, asToken(a.Token), "GET", "/api/v1/sessions", nil), 401)
	wantAPIError(t, "delete it again", pl.call(t, pl.admin(), "DELETE", "/api/v1/agents/ci-bot", nil), 404, "ci-bot")
}

func TestAgentPatchNarrowingRevokes(t *testing.T) {
	pl, up := identityPipeline(t)
	a := pl.createAgent(t, "wide", []string{"github", "npm"}, "")
	tok := asToken(a.Token)
	both := pl.mint(t, tok, apiwire.SessionRequest{TTL: "20m"})
	gh := pl.mint(t, tok, apiwire.SessionRequest{Services: []string{"github"}, TTL: "20m"})
	short := pl.mint(t, tok, apiwire.SessionRequest{Services: []string{"github"}, TTL: "2m"})
	tun := pl.openTunnel(t, asAgentSession(both), up.hostPort)

	var got, got2 apiwire.Agent
	pl.must(t, pl.admin(), "PATCH", "/api/v1/agents/wide", apiwire.AgentPatchRequest{Services: []string{"github"}}, 200, &got)
	if !slices.Equal(got.Services, []string{"github"}) || !slices.Equal(got.RevokedSessions, []string{both.ID}) {
		t.Fatalf("PATCH services: %+v, want [github] and %s revoked", got, both.ID)
	}
	if _, err := tun.br.ReadByte(); err == nil {
		t.Fatal("a tunnel of a revoked session is open")
	}
	ttl := "5m"
	pl.must(t, pl.admin(), "PATCH", "/api/v1/agents/wide", apiwire.AgentPatchRequest{MaxSessionTTL: &ttl}, 200, &got2)
	if got2.MaxSessionTTL != "5m" || !slices.Equal(got2.Services, []string{"github"}) || !slices.Equal(got2.RevokedSessions, []string{gh.ID}) {
		t.Fatalf("PATCH max_session_ttl 5m: %+v, want the 20m session %s revoked and the 2m one kept", got2, gh.ID)
	}
	for id, want := range map[string]string{both.ID: apiwire.SessionRevoked, gh.ID: apiwire.SessionRevoked, short.ID: apiwire.SessionActive} {
		if st := pl.sessionStatus(t, id); st != want {
			t.Errorf("session %s is %q, want %q", id, st, want)
		}
	}
	// Widening revokes nothing; bad input changes nothing.
	var wider apiwire.Agent
	pl.must(t, pl.admin(), "PATCH", "/api/v1/agents/wide", apiwire.AgentPatchRequest{Services: []string{"*"}}, 200, &wider)
	if len(wider.RevokedSessions) != 0 || !slices.Equal(wider.Services, []string{"*"}) {
		t.Errorf("widening: %+v", wider)
	}
	wantAPIError(t, "PATCH an unknown service", pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/wide", apiwire.AgentPatchRequest{Services: []string{"nosuch"}}), 400, "nosuch")
	big := "1000h"
	wantAPIError(t, "PATCH a TTL above the server's", pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/wide", apiwire.AgentPatchRequest{MaxSessionTTL: &big}), 400, "max_session_ttl")
	wantAPIError(t, "PATCH an unknown agent", pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/nobody", apiwire.AgentPatchRequest{Services: []string{"*"}}), 404, "nobody")
	var after apiwire.Agent
	pl.must(t, pl.admin(), "GET", "/api/v1/agents/wide", nil, 200, &after)
	if !slices.Equal(after.Services, []string{"*"}) || after.MaxSessionTTL != "5m" {
		t.Errorf("after refused PATCHes: %+v", after)
	}
}

func TestAgentCreateRefusals(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createAgent(t, "ci-bot", []string{"github"}, "")
	for _, c := range []struct {
		body   apiwire.AgentCreateRequest
		status int
		text   string
	}{
		{apiwire.AgentCreateRequest{Name: "ci-bot", Services: []string{"github"}}, 409, "ci-bot exists"},
		{apiwire.AgentCreateRequest{Name: "x", Services: []string{"nosuch"}}, 400, `unknown service "nosuch"`},
		{apiwire.AgentCreateRequest{Name: "x"}, 400, `"services"`},
		{apiwire.AgentCreateRequest{Name: "x", Services: []string{"*", "github"}}, 400, `"*"`},
		{apiwire.AgentCreateRequest{Name: "Bad Name", Services: []string{"github"}}, 400, "invalid agent name"},
		{apiwire.AgentCreateRequest{Name: "x", Services: []string{"github"}, MaxSessionTTL: "25h"}, 400, "max_session_ttl 25h exceeds"},
	} {
		wantAPIError(t, "POST /api/v1/agents "+c.body.Name, pl.call(t, pl.admin(), "POST", "/api/v1/agents", c.body), c.status, c.text)
	}
	wantAPIError(t, "GET a refused agent", pl.call(t, pl.admin(), "GET", "/api/v1/agents/x", nil), 404)
}

func TestAccessRequests(t *testing.T) {
	pl, _ := identityPipeline(t)
	a := pl.createAgent(t, "ci-bot", []string{"github"}, "")
	tok := asToken(a.Token)
	sess := pl.mint(t, tok, apiwire.SessionRequest{TTL: "10m"})
	bare := pl.mint(t, pl.admin(), apiwire.SessionRequest{TTL: "10m"})

	// Create, then the same again: the pending one comes back (200).
	var req apiwire.AccessRequest
	pl.must(t, tok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "npm", Reason: "publishing"}, 201, &req)
	if !strings.HasPrefix(req.ID, "req_") || len(req.ID) != 28 || req.Agent != "ci-bot" || req.Status != apiwire.RequestPending || req.Service != "npm" {
		t.Fatalf("request = %+v", req)
	}
	var again apiwire.AccessRequest
	pl.must(t, tok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "npm"}, 200, &again)
	if again.ID != req.ID {
		t.Errorf("a duplicate pending request got a new id %s (first %s)", again.ID, req.ID)
	}
	// Through the agent's session: filed for the agent, naming the session.
	var viaSess apiwire.AccessRequest
	pl.must(t, asToken(sess.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "API.Example.COM"}, 201, &viaSess)
	if viaSess.Agent != "ci-bot" || viaSess.Session != sess.ID || viaSess.Host != "api.example.com" {
		t.Errorf("request through the session: %+v", viaSess)
	}
	for _, c := range []struct {
		what   string
		call   apiCall
		body   any
		status int
		text   string
	}{
		{"already allowed", tok, apiwire.AccessRequestCreate{Service: "github"}, 409, "already allowed"},
		{"an unknown service", tok, apiwire.AccessRequestCreate{Service: "nosuch"}, 400, `unknown service "nosuch"`},
		{"both", tok, apiwire.AccessRequestCreate{Service: "npm", Host: "x.example"}, 400, "exactly one"},
		{"neither", tok, apiwire.AccessRequestCreate{}, 400, "exactly one"},
		{"a bad host", tok, apiwire.AccessRequestCreate{Host: "http://x.example/"}, 400, "host"},
		{"a long reason", tok, apiwire.AccessRequestCreate{Host: "x.example", Reason: strings.Repeat("r", 501)}, 400, "at most 500"},
		{"a control character", tok, apiwire.AccessRequestCreate{Host: "x.example", Reason: "a\x1b[31m"}, 400, "control"},
		{"a session of no agent", asToken(bare.Token), apiwire.AccessRequestCreate{Host: "x.example"}, 403, "without an agent"},
		{"an operator", pl.admin(), apiwire.AccessRequestCreate{Host: "x.example"}, 403, "the admin token may not POST /api/v1/requests"},
	} {
		wantAPIError(t, c.what, pl.call(t, c.call, "POST", "/api/v1/requests", c.body), c.status, c.text)
	}

	// The agent lists its own; an operator filters by status.
	var mine apiwire.AccessRequestList
	pl.must(t, tok, "GET", "/api/v1/requests", nil, 200, &mine)
	if len(mine.Requests) != 2 || mine.Requests[0].ID != viaSess.ID {
		t.Errorf("ci-bot's requests (newest first): %+v", mine.Requests)
	}
	wantAPIError(t, "a bad status filter", pl.call(t, pl.admin(), "GET", "/api/v1/requests?status=maybe", nil), 400, "status")

	// Approving a host request validates the service before any write.
	bad := services.Service{Name: "example", Host: "api.example.com", Auth: services.Auth{Type: "bogus"}}
	wantAPIError(t, "approve with an invalid service", pl.call(t, pl.admin(), "POST", "/api/v1/requests/"+viaSess.ID+"/approve", apiwire.AccessRequestApprove{Service: &bad}), 400, "service")
	elsewhere := services.Service{Name: "example", Host: "other.example.com", Auth: services.Auth{Type: services.AuthPassthrough}}
	wantAPIError(t, "approve with a service for another host", pl.call(t, pl.admin(), "POST", "/api/v1/requests/"+viaSess.ID+"/approve", apiwire.AccessRequestApprove{Service: &elsewhere}), 400, "does not cover")
	wantAPIError(t, "approve a host nothing covers, without a service", pl.call(t, pl.admin(), "POST", "/api/v1/requests/"+viaSess.ID+"/approve", nil), 400, "no service covers api.example.com")
	if hasService(t, pl, "example") {
		t.Fatal("a refused approval created the service")
	}
	var still apiwire.AccessRequestList
	pl.must(t, pl.admin(), "GET", "/api/v1/requests?status=pending", nil, 200, &still)
	if len(still.Requests) != 2 {
		t.Fatalf("after refused approvals, %d pending requests, want 2", len(still.Requests))
	}
	good := services.Service{Name: "example", Host: "api.example.com", Auth: services.Auth{Type: services.AuthPassthrough}}
	var approved apiwire.AccessRequest
	pl.must(t, pl.admin(), "POST", "/api/v1/requests/"+viaSess.ID+"/approve", apiwire.AccessRequestApprove{Service: &good}, 200, &approved)
	if approved.Status != apiwire.RequestApproved || approved.DecidedBy != "admin-token" || approved.DecidedAt == nil {
		t.Errorf("approved = %+v", approved)
	}
	if !hasService(t, pl, "example") {
		t.Error("approving with a service did not create it")
	}
	// The service request: granted as named.
	pl.createOperator(t, "alice", testPassword, "admin")
	alice := asToken(pl.login(t, "alice", testPassword).Token)
	pl.must(t, alice, "POST", "/api/v1/requests/"+req.ID+"/approve", nil, 200, &approved)
	var agent apiwire.Agent
	pl.must(t, pl.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &agent)
	if !slices.Equal(agent.Services, []string{"example", "github", "npm"}) {
		t.Errorf("after two approvals ci-bot has %v", agent.Services)
	}
	next := pl.mint(t, tok, apiwire.SessionRequest{})
	if !slices.Equal(next.Services, []string{"example", "github", "npm"}) {
		t.Errorf("the next session has %v", next.Services)
	}
	wantAPIError(t, "decide again", pl.call(t, alice, "POST", "/api/v1/requests/"+req.ID+"/deny", nil), 409, "approved already")
	wantAPIError(t, "decide an unknown request", pl.call(t, alice, "POST", "/api/v1/requests/req_000000000000000000000000/approve", nil), 404)

	// Deny with a reason.
	var asked, denied apiwire.AccessRequest
	pl.must(t, tok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, 201, &asked)
	pl.must(t, alice, "POST", "/api/v1/requests/"+asked.ID+"/deny", apiwire.AccessRequestDeny{Reason: "not for CI"}, 200, &denied)
	if denied.Status != apiwire.RequestDenied || denied.DecisionReason != "not for CI" || denied.DecidedBy != "alice" {
		t.Errorf("denied = %+v", denied)
	}
	pl.must(t, pl.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &agent)
	if slices.Contains(agent.Services, "stripe") {
		t.Error("a denied request granted its service")
	}
	// A host an existing service covers: approved without a body, that
	// service is granted.
	other := pl.createAgent(t, "other", []string{"github"}, "")
	var hostReq apiwire.AccessRequest
	pl.must(t, asToken(other.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "registry.npm.example"}, 201, &hostReq)
	pl.must(t, alice, "POST", "/api/v1/requests/"+hostReq.ID+"/approve", "", 200, nil)
	pl.must(t, pl.admin(), "GET", "/api/v1/agents/other", nil, 200, &agent)
	if !slices.Equal(agent.Services, []string{"github", "npm"}) {
		t.Errorf("approving a covered host granted %v, want github,npm", agent.Services)
	}
}

// hasService reports whether the pipeline's API lists service name.
func hasService(t testing.TB, pl *pipeline, name string) bool {
	t.Helper()
	var l apiwire.ServiceList
	pl.must(t, pl.admin(), "GET", "/api/v1/services", nil, 200, &l)
	return slices.ContainsFunc(l.Services, func(s apiwire.Service) bool { return s.Name == name })
}

func TestAuditTrail(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.must(t, pl.admin(), "PUT", "/api/v1/credentials/NPM_TOKEN", map[string]string{"value": "npm-secret-value-123"}, 201, nil)
	pl.createOperator(t, "alice", testPassword, "admin")
	pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: "wrong password here"})
	login := pl.login(t, "alice", testPassword)
	alice := asToken(login.Token)
	agent := apiwire.Agent{}
	pl.must(t, alice, "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: "ci-bot", Services: []string{"github"}}, 201, &agent)
	sess := pl.mint(t, asToken(agent.Token), apiwire.SessionRequest{TTL: "10m"})
	var req apiwire.AccessRequest
	pl.must(t, asToken(sess.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "npm"}, 201, &req)
	pl.must(t, alice, "POST", "/api/v1/requests/"+req.ID+"/approve", nil, 200, nil)
	pl.must(t, alice, "POST", "/api/v1/agents/ci-bot/rotate", nil, 200, nil)
	pl.must(t, alice, "DELETE", "/api/v1/sessions/"+sess.ID, nil, 204, nil)
	pl.must(t, pl.admin(), "PUT", "/api/v1/services/extra", services.Service{Host: "extra.example", Auth: services.Auth{Type: services.AuthPassthrough}}, 200, nil)
	pl.must(t, pl.admin(), "DELETE", "/api/v1/services/extra", nil, 204, nil)
	pl.must(t, pl.admin(), "DELETE", "/api/v1/credentials/NPM_TOKEN", nil, 204, nil)
	var asked apiwire.AccessRequest
	pl.must(t, asToken(rotated(t, pl, alice)), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "deny.example"}, 201, &asked)
	pl.must(t, alice, "POST", "/api/v1/requests/"+asked.ID+"/deny", apiwire.AccessRequestDeny{Reason: "no"}, 200, nil)
	pl.must(t, alice, "PATCH", "/api/v1/agents/ci-bot", apiwire.AgentPatchRequest{Services: []string{"npm"}}, 200, nil)
	pl.must(t, alice, "DELETE", "/api/v1/agents/ci-bot", nil, 204, nil)
	role := "viewer"
	pl.createOperator(t, "vic", testPassword, "admin")
	pl.must(t, pl.admin(), "PATCH", "/api/v1/operators/vic", apiwire.OperatorPatchRequest{Role: &role}, 200, nil)
	pl.must(t, pl.admin(), "DELETE", "/api/v1/operators/vic", nil, 204, nil)
	pl.must(t, alice, "POST", "/api/v1/logout", nil, 204, nil)

	entries := pl.auditEntries(t, url.Values{"limit": {"1000"}})
	type want struct{ action, actor, kind, target string }
	for _, w := range []want{
		{"credential.put", "admin-token", "admin-token", "NPM_TOKEN"},
		{"operator.create", "admin-token", "admin-token", "alice"},
		{"login.failed", "alice", "operator", "alice"},
		{"login", "alice", "operator", "alice"},
		{"agent.create", "alice", "operator", "ci-bot"},
		{"session.create", "ci-bot", "agent", sess.ID},
		{"request.create", "ci-bot", "session", req.ID},
		{"request.approve", "alice", "operator", req.ID},
		{"agent.rotate", "alice", "operator", "ci-bot"},
		{"session.revoke", "alice", "operator", sess.ID},
		{"service.put", "admin-token", "admin-token", "extra"},
		{"service.delete", "admin-token", "admin-token", "extra"},
		{"credential.delete", "admin-token", "admin-token", "NPM_TOKEN"},
		{"logout", "alice", "operator", "alice"},
		{"request.create", "ci-bot", "agent", asked.ID},
		{"request.deny", "alice", "operator", asked.ID},
		{"agent.update", "alice", "operator", "ci-bot"},
		{"agent.delete", "alice", "operator", "ci-bot"},
		{"operator.update", "admin-token", "admin-token", "vic"},
		{"operator.delete", "admin-token", "admin-token", "vic"},
	} {
		if !slices.ContainsFunc(entries, func(e apiwire.AuditEntry) bool {
			return e.Action == w.action && e.Actor == w.actor && e.ActorKind == w.kind && e.Target == w.target && e.Client == "127.0.0.1"
		}) {
			t.Errorf("no audit entry %+v from 127.0.0.1 in:\n%s", w, auditText(entries))
		}
	}
	all := auditText(entries)
	for _, secret := range []string{"npm-secret-value-123", testPassword, "wrong password here", agent.Token, sess.Token, login.Token} {
		if strings.Contains(all, secret) {
			t.Errorf("the audit trail holds a secret %q", secret)
		}
	}
	if len(entries) < 2 || entries[0].Time.Before(entries[len(entries)-1].Time) {
		t.Error("audit entries are not newest first")
	}
	// Filters and paging: two pages of one, then the next_before cursor.
	byActor := pl.auditEntries(t, url.Values{"actor": {"alice"}, "action": {"agent.create"}})
	if len(byActor) != 1 || byActor[0].Target != "ci-bot" {
		t.Errorf("?actor=alice&action=agent.create: %v", byActor)
	}
	var page apiwire.AuditList
	pl.must(t, pl.admin(), "GET", "/api/v1/audit?limit=1", nil, 200, &page)
	if len(page.Entries) != 1 || page.NextBefore == "" {
		t.Fatalf("first page: %+v", page)
	}
	var page2 apiwire.AuditList
	pl.must(t, pl.admin(), "GET", "/api/v1/audit?limit=1&before="+url.QueryEscape(page.NextBefore), nil, 200, &page2)
	if len(page2.Entries) != 1 || page2.Entries[0].ID == page.Entries[0].ID || page2.Entries[0].ID != entries[1].ID {
		t.Errorf("second page %+v after %+v, want %s", page2.Entries, page.Entries, entries[1].ID)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "action=nosuch", "before=yesterday"} {
		wantAPIError(t, "GET /api/v1/audit?"+q, pl.call(t, pl.admin(), "GET", "/api/v1/audit?"+q, nil), 400)
	}
	wantAPIError(t, "GET /api/v1/audit?before=x", pl.call(t, pl.admin(), "GET", "/api/v1/audit?before=x", nil), 400, "before: want a cursor")
	wantAPIError(t, "an old agent token reads the audit", pl.call(t, asToken(agent.Token), "GET", "/api/v1/audit", nil), 401) // rotated
	other := pl.createAgent(t, "other", []string{"github"}, "")
	wantAPIError(t, "an agent reads the audit", pl.call(t, asToken(other.Token), "GET", "/api/v1/audit", nil), 403, "an agent token may not GET /api/v1/audit")
}

// rotated rotates ci-bot's token (as an operator) and returns the new one.
func rotated(t *testing.T, pl *pipeline, op apiCall) string {
	t.Helper()
	var a apiwire.Agent
	pl.must(t, op, "POST", "/api/v1/agents/ci-bot/rotate", nil, 200, &a)
	return a.Token
}

// auditText is the entries, one a line, for failure messages.
func auditText(entries []apiwire.AuditEntry) string {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Action + " " + e.Actor + "(" + e.ActorKind + ") " + e.Target + " " + e.Client + " " + e.Detail + "\n")
	}
	return b.String()
}

func TestLoginRateLimit(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "viewer")
	wrong := apiwire.LoginRequest{Name: "alice", Password: "not the password!"}
	for i := 0; i < 5; i++ {
		wantAPIError(t, "a wrong password", pl.call(t, apiCall{}, "POST", "/api/v1/login", wrong), 401, "wrong operator name or password")
	}
	// Over the name's budget: 429, even with the right password, which
	// is not checked.
	a := pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: testPassword})
	wantAPIError(t, "the sixth attempt", a, 429, "too many failed logins for this name; retry in")
	if ra := a.header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("429 with Retry-After %q", ra)
	}
	if strings.Contains(a.body, "token") {
		t.Errorf("a refused login got a token: %s", a.body)
	}
	// Another name from the same address still gets through (its own
	// budget), until the address's is spent.
	pl.createOperator(t, "bob", testPassword, "viewer")
	pl.login(t, "bob", testPassword)
	// An unknown name fails like a wrong password.
	wantAPIError(t, "an unknown name", pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "nobody", Password: testPassword}), 401, "wrong operator name or password")
	// After the window the right password works again.
	pl.setSessionClock(6 * time.Minute)
	defer pl.setSessionClock(0)
	pl.login(t, "alice", testPassword)
}

func TestLoginCookie(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "admin")
	a := pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: testPassword})
	if a.status != 200 {
		t.Fatalf("login: %d %s", a.status, a.body)
	}
	var login apiwire.Login
	if err := json.Unmarshal([]byte(a.body), &login); err != nil {
		t.Fatal(err)
	}
	cookie := loginCookieOf(t, a)
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.MaxAge != int((12*time.Hour)/time.Second) || cookie.Secure {
		t.Fatalf("login cookie: %+v", cookie)
	}
	// The cookie holds a secret of its own, not the login's token:
	// browsers send cookies to every port of the host.
	if !strings.HasPrefix(cookie.Value, "avc_") || cookie.Value == login.Token || !strings.HasPrefix(login.Token, "avo_") {
		t.Fatalf("cookie %q, token %q: want an avc_ cookie secret distinct from the avo_ token", cookie.Value, login.Token)
	}
	withCookie := func(headers ...string) apiCall { return apiCall{cookie: cookie.Value, headers: headers} }
	// It reads, from anywhere (the answer goes to the browser).
	pl.must(t, withCookie(), "GET", "/api/v1/agents", nil, 200, nil)
	pl.must(t, withCookie("Sec-Fetch-Site", "cross-site"), "GET", "/api/v1/agents", nil, 200, nil)
	// It changes nothing, however it comes: same origin or not.
	svc := services.Service{Host: "c.example", Auth: services.Auth{Type: services.AuthPassthrough}}
	for _, h := range [][]string{
		{"Origin", "https://evil.example"},
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "null"},
		{"Origin", pl.apiURL, "Sec-Fetch-Site", "same-origin"},
		{},
	} {
		wantAPIError(t, fmt.Sprintf("cookie PUT with %q", h), pl.call(t, withCookie(h...), "PUT", "/api/v1/services/c", svc), 403,
			"a login cookie alone cannot change anything: send the login's token as a Bearer header")
	}
	wantAPIError(t, "cookie POST /api/v1/agents", pl.call(t, withCookie(), "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: "x", Services: []string{"*"}}), 403, "login cookie alone")
	if hasService(t, pl, "c") {
		t.Fatal("a cookie request created a service")
	}
	// The cookie's secret is never a Bearer token (what a program on
	// another port of the host receives buys nothing more).
	wantAPIError(t, "the cookie's secret as a Bearer", pl.call(t, asToken(cookie.Value), "GET", "/api/v1/agents", nil), 401, "not a bearer token")
	wantAPIError(t, "the cookie's secret as a Bearer, a change", pl.call(t, asToken(cookie.Value), "PUT", "/api/v1/services/c", svc), 401)
	// The login's token (Bearer) changes things, and is not checked for
	// browser headers: nothing sends that header by itself.
	pl.must(t, apiCall{token: login.Token, headers: []string{"Origin", "https://evil.example"}}, "PUT", "/api/v1/services/c", svc, 200, nil)
	pl.must(t, asToken(login.Token), "DELETE", "/api/v1/services/c", nil, 204, nil)
	// The login's token in the cookie is not a login cookie; nor is
	// another kind of token.
	wantAPIError(t, "the login's token in the cookie", pl.call(t, apiCall{cookie: login.Token}, "GET", "/api/v1/agents", nil), 401, "cookie")
	wantAPIError(t, "an admin token in the cookie", pl.call(t, apiCall{cookie: pl.adminToken}, "GET", "/api/v1/agents", nil), 401, "cookie")
	// Logout by cookie: only from this server's own pages.
	for _, h := range [][]string{{"Sec-Fetch-Site", "same-site"}, {"Sec-Fetch-Site", "cross-site"}, {"Origin", "http://127.0.0.1:3000"}, {"Origin", "null"}} {
		wantAPIError(t, fmt.Sprintf("cookie logout with %q", h), pl.call(t, withCookie(h...), "POST", "/api/v1/logout", nil), 403, "may not use the login cookie")
	}
	pl.must(t, asToken(login.Token), "GET", "/api/v1/agents", nil, 200, nil)
	// Logout ends the login, both its secrets, and clears the cookie.
	out := pl.call(t, withCookie("Origin", pl.apiURL, "Sec-Fetch-Site", "same-origin"), "POST", "/api/v1/logout", nil)
	if out.status != 204 || !strings.Contains(out.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout: %d %v", out.status, out.header)
	}
	wantAPIError(t, "the cookie after logout", pl.call(t, withCookie(), "GET", "/api/v1/agents", nil), 401, "log in")
	wantAPIError(t, "the token after a logout by cookie", pl.call(t, asToken(login.Token), "GET", "/api/v1/agents", nil), 401, "log in")
	// And a logout by token ends the cookie too; another login lives on.
	l2 := pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: testPassword})
	var tok2 apiwire.Login
	json.Unmarshal([]byte(l2.body), &tok2)
	c2 := loginCookieOf(t, l2)
	other := pl.login(t, "alice", testPassword)
	pl.must(t, asToken(tok2.Token), "POST", "/api/v1/logout", nil, 204, nil)
	wantAPIError(t, "the cookie after a logout by token", pl.call(t, apiCall{cookie: c2.Value}, "GET", "/api/v1/agents", nil), 401)
	pl.must(t, asToken(other.Token), "GET", "/api/v1/agents", nil, 200, nil)
	// A password change ends every login's secrets.
	pw := "another long password"
	l3 := pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: testPassword})
	c3 := loginCookieOf(t, l3)
	pl.must(t, pl.admin(), "PATCH", "/api/v1/operators/alice", apiwire.OperatorPatchRequest{Password: &pw}, 200, nil)
	wantAPIError(t, "a cookie after a password change", pl.call(t, apiCall{cookie: c3.Value}, "GET", "/api/v1/agents", nil), 401)
	// The admin token's logout is a no-op.
	pl.must(t, pl.admin(), "POST", "/api/v1/logout", nil, 204, nil)
	pl.must(t, pl.admin(), "GET", "/api/v1/agents", nil, 200, nil)
}

// loginCookieOf is the login cookie a login's answer sets.
func loginCookieOf(t *testing.T, a apiAnswer) *http.Cookie {
	t.Helper()
	resp := http.Response{Header: a.header}
	for _, c := range resp.Cookies() {
		if c.Name == "agent_vault_login" {
			return c
		}
	}
	t.Fatalf("no login cookie in %v", a.header)
	return nil
}

// TestLoginCookiePortsProof is the reviewer's proof, kept: a cookie
// jar (RFC 6265, as browsers do) sends the API's login cookie to every
// port of the host, so what another port receives must not be usable
// as the login.
func TestLoginCookiePortsProof(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "owner")
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	resp, err := client.Post(pl.apiURL+"/api/v1/login", "application/json", strings.NewReader(`{"name":"alice","password":"`+testPassword+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	api, _ := url.Parse(pl.apiURL)
	other, _ := url.Parse("http://" + api.Hostname() + ":3000/")
	cs := jar.Cookies(other)
	if len(cs) != 1 {
		t.Fatalf("the jar sends %d cookies to another port, want the login cookie (cookies ignore ports)", len(cs))
	}
	for _, c := range []apiCall{asToken(cs[0].Value), {cookie: cs[0].Value}} {
		if a := pl.call(t, c, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "mallory", Password: testPassword, Role: "owner"}); a.status < 400 {
			t.Errorf("what a server on port 3000 receives made an owner: %d %s", a.status, a.body)
		}
	}
	if a := pl.call(t, asToken(cs[0].Value), "GET", "/api/v1/operators", nil); a.status != 401 {
		t.Errorf("the cookie's secret as a Bearer reads operators: %d", a.status)
	}
}

// TestLoginCSRF: a login from another site (a form posting the
// attacker's credentials, text/plain) is refused before anything, so
// it neither logs the browser in nor spends a real operator's budget;
// a client that is not a browser logs in without a Content-Type.
func TestLoginCSRF(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "eve", "attacker=password1", "viewer")
	pl.createOperator(t, "alice", testPassword, "owner")
	post := func(body string, headers ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", pl.apiURL+"/api/v1/login", strings.NewReader(body))
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// What <form method=post enctype=text/plain> on another site sends.
	form := `{"name":"eve","password":"attacker` + "=" + `password1"}` + "\r\n"
	for _, h := range [][]string{
		{"Content-Type", "text/plain", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site"},
		{"Content-Type", "text/plain", "Sec-Fetch-Site", "same-site"},
		{"Content-Type", "text/plain", "Origin", "http://127.0.0.1:3000"},
	} {
		if resp := post(form, h...); resp.StatusCode != 403 || resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("a cross-site login %q: %d, cookie %q", h, resp.StatusCode, resp.Header.Get("Set-Cookie"))
		}
	}
	for range 6 {
		post(`{"name":"alice","password":"x=yyyyyyyyyyyy"}`, "Content-Type", "text/plain", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	}
	pl.login(t, "alice", testPassword) // her budget is untouched
	// curl without a Content-Type, and a same-origin page, log in.
	if resp := post(`{"name":"eve","password":"attacker=password1"}`); resp.StatusCode != 200 {
		t.Errorf("a login without a Content-Type: %d", resp.StatusCode)
	}
	if resp := post(`{"name":"eve","password":"attacker=password1"}`, "Origin", pl.apiURL, "Sec-Fetch-Site", "same-origin"); resp.StatusCode != 200 {
		t.Errorf("a same-origin login: %d", resp.StatusCode)
	}
	if n := len(pl.auditEntries(t, url.Values{"action": {"login.failed"}})); n != 0 {
		t.Errorf("refused cross-site logins left %d login.failed entries", n)
	}
}

func TestOperators(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "olga", testPassword, "owner")
	pl.createOperator(t, "adam", testPassword, "admin")
	owner := asToken(pl.login(t, "olga", testPassword).Token)
	admin := asToken(pl.login(t, "adam", testPassword).Token)
	wantAPIError(t, "an admin creates an operator", pl.call(t, admin, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "x", Password: testPassword, Role: "viewer"}),
		403, "role admin may not POST /api/v1/operators: needs owner")
	for _, c := range []struct {
		body   apiwire.OperatorCreateRequest
		status int
		text   string
	}{
		{apiwire.OperatorCreateRequest{Name: "x", Password: "short", Role: "viewer"}, 400, "shorter than 12"},
		{apiwire.OperatorCreateRequest{Name: "x", Password: testPassword, Role: "god"}, 400, "unknown role"},
		{apiwire.OperatorCreateRequest{Name: "X Y", Password: testPassword, Role: "viewer"}, 400, "invalid operator name"},
		{apiwire.OperatorCreateRequest{Name: "adam", Password: testPassword, Role: "viewer"}, 409, "adam exists"},
	} {
		wantAPIError(t, "POST operator "+c.body.Name, pl.call(t, owner, "POST", "/api/v1/operators", c.body), c.status, c.text)
	}
	var list apiwire.OperatorList
	a := pl.must(t, owner, "GET", "/api/v1/operators", nil, 200, &list)
	if len(list.Operators) != 2 || strings.Contains(a.body, "argon2") {
		t.Errorf("operators: %s", a.body)
	}
	// A role change counts at once; a password change ends the logins.
	role := "viewer"
	pl.must(t, owner, "PATCH", "/api/v1/operators/adam", apiwire.OperatorPatchRequest{Role: &role}, 200, nil)
	wantAPIError(t, "adam, now a viewer, changes a service", pl.call(t, admin, "DELETE", "/api/v1/services/npm", nil), 403, "role viewer")
	pw := "another long password"
	pl.must(t, owner, "PATCH", "/api/v1/operators/adam", apiwire.OperatorPatchRequest{Password: &pw}, 200, nil)
	wantAPIError(t, "adam's login after a password change", pl.call(t, admin, "GET", "/api/v1/agents", nil), 401)
	pl.login(t, "adam", pw)
	pl.must(t, owner, "DELETE", "/api/v1/operators/adam", nil, 204, nil)
	wantAPIError(t, "delete again", pl.call(t, owner, "DELETE", "/api/v1/operators/adam", nil), 404, "adam")
	wantAPIError(t, "a deleted operator logs in", pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "adam", Password: pw}), 401)
}

func TestLeaseLapseEndsSession(t *testing.T) {
	pl, up := identityPipeline(t)
	a := pl.createAgent(t, "launcher", []string{"github"}, "")
	tok := asToken(a.Token)
	s := pl.mint(t, tok, apiwire.SessionRequest{TTL: "1h", Lease: true})
	plain := pl.mint(t, tok, apiwire.SessionRequest{TTL: "1h"})
	tun := pl.openTunnel(t, asAgentSession(s), up.hostPort)
	wantStatus(t, tun.get("/before", up.hostPort), 200)

	// Renewals keep it alive past the first lease.
	pl.setSessionClock(20 * time.Second)
	var ren apiwire.LeaseRenewal
	pl.must(t, tok, "POST", "/api/v1/sessions/"+s.ID+"/renew", nil, 200, &ren)
	if ren.ID != s.ID || !ren.LeaseExpiresAt.After(*s.LeaseExpiresAt) {
		t.Fatalf("renewal %+v after lease %v", ren, s.LeaseExpiresAt)
	}
	pl.setSessionClock(40 * time.Second)
	if res := pl.sweep(); res.LeaseLapsed != 0 {
		t.Fatal("a renewed lease lapsed")
	}
	wantStatus(t, tun.get("/renewed", up.hostPort), 200)
	wantAPIError(t, "renew a session without a lease", pl.call(t, tok, "POST", "/api/v1/sessions/"+plain.ID+"/renew", nil), 409, "has no lease")
	wantAPIError(t, "renew an unknown session", pl.call(t, tok, "POST", "/api/v1/sessions/ses_nope/renew", nil), 404)

	// Renewals stop: the sweep ends it, closes the tunnel, revokes it in
	// the store and audits it.
	pl.setSessionClock(20*time.Second + 31*time.Second)
	res := pl.sweep()
	if res.LeaseLapsed != 1 {
		t.Fatalf("sweep ended %+v", res)
	}
	if _, err := tun.br.ReadByte(); err == nil {
		t.Fatal("the tunnel of a lapsed session is open")
	}
	if row, ok, err := pl.db.Session(context.Background(), s.ID); err != nil || !ok || row.RevokedAt == nil {
		t.Errorf("the lapsed session in the store: %+v %v %v, want revoked", row, ok, err)
	}
	if st := pl.sessionStatus(t, s.ID); st != apiwire.SessionRevoked {
		t.Errorf("the lapsed session is listed %q", st)
	}
	if st := pl.sessionStatus(t, plain.ID); st != apiwire.SessionActive {
		t.Errorf("the session without a lease is %q", st)
	}
	wantAPIError(t, "renew after the lapse", pl.call(t, tok, "POST", "/api/v1/sessions/"+s.ID+"/renew", nil), 410, "has ended")
	lapsed := pl.auditEntries(t, url.Values{"action": {"session.lease_expired"}})
	if len(lapsed) != 1 || lapsed[0].Target != s.ID || lapsed[0].Actor != "launcher" || lapsed[0].ActorKind != "session" {
		t.Errorf("audit of the lapse: %+v", lapsed)
	}
}

func TestUncoveredHostRefusalSaysHowToAsk(t *testing.T) {
	pl, _ := identityPipeline(t)
	agent := pl.createAgent(t, "ci-bot", []string{"github"}, "")
	s := pl.mint(t, asToken(agent.Token), apiwire.SessionRequest{TTL: "10m"})
	a := pl.askInTunnel(t, "api.unknown.example:443", basicAuth(s.Token))
	wantRefusal(t, a, http.StatusForbidden, `no service in this session's scope covers api.unknown.example:443; the proxy denies unknown hosts; to ask for access: POST /api/v1/requests {"host":"api.unknown.example"} with your session token`)
	for _, line := range []string{"\nrefusal: uncovered_host\n", "\nhost: api.unknown.example\n", "\nthis session's services: github\n",
		"\nto ask for access: POST /api/v1/requests {\"host\":\"api.unknown.example\"} with your session token\n"} {
		if !strings.Contains(a.body, line) {
			t.Errorf("the text refusal lacks %q: %q", line, a.body)
		}
	}
	// JSON for a client that asks for it, with the same facts.
	j := pl.askInTunnel(t, "api.unknown.example:443", basicAuth(s.Token), "Accept: application/json")
	var body apiwire.ProxyRefusal
	if err := json.Unmarshal([]byte(j.body), &body); err != nil || j.header.Get("Content-Type") != "application/json" {
		t.Fatalf("JSON refusal %q (%s): %v", j.body, j.header.Get("Content-Type"), err)
	}
	if d := body.Error; d.Status != 403 || d.Code != "uncovered_host" || d.Host != "api.unknown.example" || !slices.Equal(d.Scope, []string{"github"}) ||
		d.RequestAccess != `POST /api/v1/requests {"host":"api.unknown.example"} with your session token` || !strings.Contains(d.Reason, "no service") {
		t.Errorf("JSON refusal %+v", d)
	}
	b := pl.askInTunnel(t, "api.unknown.example:8443", basicAuth(s.Token))
	wantRefusal(t, b, http.StatusForbidden, `{"host":"api.unknown.example:8443"}`)
	// A session of no agent cannot file requests: it is not told to.
	bare := pl.session(t, "github")
	c := pl.askInTunnel(t, "api.unknown.example:443", basicAuth(bare.token))
	wantRefusal(t, c, http.StatusForbidden, "this session belongs to no agent, so it cannot ask for access itself: ask an operator to add a service for api.unknown.example")
	if strings.Contains(c.body, "/api/v1/requests") {
		t.Errorf("a session of no agent is told to file a request: %q", c.body)
	}
}
