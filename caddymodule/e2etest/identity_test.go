package e2etest

// Issue 10, agents: a token shown once, rotation that kills the old
// token at once, and deletion that ends the agent's sessions and closes
// their open tunnels.

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

func TestAgentLifecycle(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	drainHits(t, up)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	s.putService("npm", passthrough("registry.npm.example"))

	// Create: 201 with the token, shown once.
	var a apiwire.Agent
	r := s.must(s.admin(), "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: "ci-bot", Services: []string{"github"}, MaxSessionTTL: "1h"}, http.StatusCreated, &a)
	if a.Name != "ci-bot" || !slices.Equal(a.Services, []string{"github"}) || a.CreatedAt.IsZero() {
		t.Fatalf("POST /api/v1/agents = %s", r.body)
	}
	if d, err := time.ParseDuration(a.MaxSessionTTL); err != nil || d != time.Hour {
		t.Errorf("max_session_ttl = %q, want 1h", a.MaxSessionTTL)
	}
	if !strings.HasPrefix(a.Token, "avt_") || tokenBits(a.Token) < 128 {
		t.Fatalf("agent token %q: want avt_ and >= 128 bits of base64url, got %d bits", a.Token, tokenBits(a.Token))
	}
	for _, path := range []string{"/api/v1/agents", "/api/v1/agents/ci-bot"} {
		r := s.must(s.admin(), "GET", path, nil, 200, nil)
		mustNotContain(t, "GET "+path, r.body, a.Token)
		mustNotContain(t, "GET "+path, r.body, `"token"`)
		mustContain(t, "GET "+path, r.body, `"ci-bot"`)
	}
	var list apiwire.AgentList
	s.must(s.admin(), "GET", "/api/v1/agents", nil, 200, &list)
	if !slices.ContainsFunc(list.Agents, func(x apiwire.Agent) bool { return x.Name == "ci-bot" }) {
		t.Fatalf("GET /api/v1/agents: %+v", list)
	}
	if !slices.IsSortedFunc(list.Agents, func(x, y apiwire.Agent) int { return strings.Compare(x.Name, y.Name) }) {
		t.Errorf("GET /api/v1/agents is not sorted by name: %+v", list)
	}
	// Bad input: 400 or 409 naming the problem, nothing created.
	for _, c := range []struct {
		body  apiwire.AgentCreateRequest
		want  int
		words string
	}{
		{apiwire.AgentCreateRequest{Name: "ci-bot", Services: []string{"github"}}, 409, "ci-bot"},
		{apiwire.AgentCreateRequest{Name: "ghost", Services: []string{"nosuch"}}, 400, "nosuch"},
		{apiwire.AgentCreateRequest{Name: "ghost", Services: nil}, 400, "services"},
		{apiwire.AgentCreateRequest{Name: "ghost", Services: []string{"*", "github"}}, 400, "*"},
		{apiwire.AgentCreateRequest{Name: "Bad Name", Services: []string{"github"}}, 400, "name"},
		{apiwire.AgentCreateRequest{Name: "ghost", Services: []string{"github"}, MaxSessionTTL: "10000h"}, 400, "max_session_ttl"},
	} {
		r := s.call(s.admin(), "POST", "/api/v1/agents", c.body)
		if r.status != c.want || !strings.Contains(r.errText(), c.words) {
			t.Errorf("POST /api/v1/agents %+v = %s, want %d naming %q", c.body, r, c.want, c.words)
		}
	}
	if r := s.call(s.admin(), "GET", "/api/v1/agents/ghost", nil); r.status != 404 {
		t.Errorf("a refused agent exists: GET /api/v1/agents/ghost = %s", r)
	}

	// The token works for what an agent may do.
	old := a.Token
	sess := s.mintSession(bearer(old), apiwire.SessionRequest{TTL: "10m"})
	if sess.Agent != "ci-bot" || !slices.Equal(sess.Services, []string{"github"}) {
		t.Fatalf("ci-bot's session: agent %q services %v", sess.Agent, sess.Services)
	}
	if !injected(asSession(sess).agentClient(t), up, githubSecret) {
		t.Fatal("ci-bot's session does not get GITHUB_TOKEN injected")
	}

	// Rotate: a new token; the old one is refused at once.
	var rot apiwire.Agent
	s.must(s.admin(), "POST", "/api/v1/agents/ci-bot/rotate", nil, http.StatusOK, &rot)
	if !strings.HasPrefix(rot.Token, "avt_") || rot.Token == old || tokenBits(rot.Token) < 128 {
		t.Fatalf("rotate: token %q (old %q)", rot.Token, old)
	}
	if r := s.call(bearer(old), "GET", "/api/v1/sessions", nil); r.status != 401 {
		t.Errorf("the old token right after rotate: GET /api/v1/sessions = %s, want 401", r)
	}
	if r := s.call(bearer(old), "POST", "/api/v1/sessions", apiwire.SessionRequest{TTL: "10m"}); r.status != 401 {
		t.Errorf("the old token right after rotate: POST /api/v1/sessions = %s, want 401", r)
	}
	s.must(bearer(rot.Token), "GET", "/api/v1/sessions", nil, 200, nil)
	// Sessions minted before the rotation keep working (rotate replaces
	// the key to the API, it does not end the agent's work).
	if !injected(asSession(sess).agentClient(t), up, githubSecret) {
		t.Error("a session minted before the rotation stopped working")
	}

	// PATCH narrowing the agent ends its sessions that exceed the new limits.
	wide := s.createAgent("wide-bot", []string{"github", "npm"}, "")
	wideSess := s.mintSession(bearer(wide.Token), apiwire.SessionRequest{TTL: "10m"})
	narrowSess := s.mintSession(bearer(wide.Token), apiwire.SessionRequest{Services: []string{"github"}, TTL: "10m"})
	var patched apiwire.Agent
	s.must(s.admin(), "PATCH", "/api/v1/agents/wide-bot", apiwire.AgentPatchRequest{Services: []string{"github"}}, 200, &patched)
	if !slices.Equal(patched.Services, []string{"github"}) || !slices.Contains(patched.RevokedSessions, wideSess.ID) || slices.Contains(patched.RevokedSessions, narrowSess.ID) {
		t.Errorf("PATCH wide-bot services [github]: services %v revoked_sessions %v; want [github] and exactly %s revoked", patched.Services, patched.RevokedSessions, wideSess.ID)
	}
	if code, _, _ := connectStatus(s.proxyAddr, up.hostPort(), wideSess.Token); code != http.StatusProxyAuthRequired {
		t.Errorf("a session beyond the narrowed scope still works at the proxy: CONNECT %d, want 407", code)
	}
	if code, _, _ := connectStatus(s.proxyAddr, up.hostPort(), narrowSess.Token); code != http.StatusOK {
		t.Errorf("a session within the narrowed scope stopped working: CONNECT %d", code)
	}
	ttl := "5m"
	s.must(s.admin(), "PATCH", "/api/v1/agents/wide-bot", apiwire.AgentPatchRequest{MaxSessionTTL: &ttl}, 200, &patched)
	if !slices.Contains(patched.RevokedSessions, narrowSess.ID) || !slices.Equal(patched.Services, []string{"github"}) {
		t.Errorf("PATCH wide-bot max_session_ttl 5m: %+v; want services kept and the 10m session %s revoked", patched, narrowSess.ID)
	}

	// Delete: 204; its sessions end and their open tunnels close.
	live := s.mintSession(bearer(rot.Token), apiwire.SessionRequest{TTL: "10m"})
	streams := []stream{sseTunnel(t, asSession(live), "h1", up.hostPort()), wsTunnel(t, s, asSession(live), up.hostPort())}
	from := time.Now()
	s.must(s.admin(), "DELETE", "/api/v1/agents/ci-bot", nil, http.StatusNoContent, nil)
	waitEnded(t, "deletion of its agent (DELETE /api/v1/agents/ci-bot)", from, streams...)
	for _, id := range []string{sess.ID, live.ID} {
		if se, ok := s.sessionInfo(id); !ok || se.Status != apiwire.SessionRevoked {
			t.Errorf("session %s of the deleted agent: %+v (listed %v), want revoked", id, se, ok)
		}
	}
	for _, tok := range []string{sess.Token, live.Token} {
		if code, _, _ := connectStatus(s.proxyAddr, up.hostPort(), tok); code != http.StatusProxyAuthRequired {
			t.Errorf("a session of the deleted agent at the proxy: CONNECT %d, want 407", code)
		}
	}
	if r := s.call(bearer(rot.Token), "GET", "/api/v1/sessions", nil); r.status != 401 {
		t.Errorf("the deleted agent's token: %s, want 401", r)
	}
	if r := s.call(s.admin(), "GET", "/api/v1/agents/ci-bot", nil); r.status != 404 {
		t.Errorf("GET the deleted agent: %s, want 404", r)
	}
	if r := s.call(s.admin(), "DELETE", "/api/v1/agents/ci-bot", nil); r.status != 404 {
		t.Errorf("DELETE it again: %s, want 404", r)
	}
	// Another agent is untouched.
	other := s.mintSession(bearer(wide.Token), apiwire.SessionRequest{TTL: "1m"})
	if code, _, _ := connectStatus(s.proxyAddr, up.hostPort(), other.Token); code != http.StatusOK {
		t.Errorf("another agent's session after the deletion: CONNECT %d, want 200", code)
	}

	// A recreated agent of the same name gets a new token; the old one
	// stays dead.
	again := s.createAgent("ci-bot", []string{"github"}, "")
	if again.Token == rot.Token || again.Token == old {
		t.Error("a recreated agent got a token it had before")
	}
	if r := s.call(bearer(rot.Token), "GET", "/api/v1/sessions", nil); r.status != 401 {
		t.Errorf("the deleted agent's token after recreation: %s, want 401", r)
	}
}

// The token survives a restart: only its hash is kept, in the state
// database, and the data dir never holds it in plaintext except
// agent.token for the local agent.
func TestAgentTokenSurvivesRestart(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	a := s.createAgent("ci-bot", []string{"*"}, "")
	s.stop()
	s2 := startServer(t, ca, serverOpts{dataDir: s.dataDir})
	s2.must(bearer(a.Token), "GET", "/api/v1/sessions", nil, 200, nil)
	s2.stop()
	assertNotOnDisk(t, s.dataDir, a.Token)
}
