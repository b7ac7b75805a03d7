package e2etest

// Issue 10, start-up: one readable summary of where everything is, and
// a missing master password said first, not at the end of a Caddy error
// chain.

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// readable is the output lines that are not Caddy's JSON log lines.
func readable(out string) []string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "{") {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestStartupSummary(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	items := []string{
		s.apiAddr, s.proxyAddr, s.dataDir, "sqlite",
		filepath.Join(s.dataDir, "admin.token"), filepath.Join(s.dataDir, "agent.token"),
	}
	var text string
	if !poll(10*time.Second, func() bool {
		text = strings.Join(readable(s.logs.String()), "\n")
		for _, it := range items {
			if !strings.Contains(text, it) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the start-up output has no readable summary naming %q; its non-JSON lines:\n%s\nall of it:\n%s", items, text, s.logs.String())
	}
	if n := strings.Count(text, filepath.Join(s.dataDir, "admin.token")); n != 1 {
		t.Errorf("the summary appears %d times, want once:\n%s", n, text)
	}
	mustNotContain(t, "summary", text, s.adminToken())
	mustNotContain(t, "summary", text, masterPassword)
}

// On PostgreSQL the summary names the backend, never the DSN's password.
func TestStartupSummaryPostgres(t *testing.T) {
	c := newCluster(t, 0)
	b := c.start(t, 1)[0]
	var text string
	if !poll(10*time.Second, func() bool {
		text = strings.Join(readable(b.logs.String()), "\n")
		return strings.Contains(text, "postgres") && strings.Contains(text, b.apiAddr)
	}) {
		t.Fatalf("no readable summary naming postgres:\n%s", b.logs.String())
	}
	mustNotContain(t, "summary", text, c.pg.Password())
}

// Without a master password the first line a user reads says so.
func TestStartNoMasterPasswordSaysSoFirst(t *testing.T) {
	ca := newTestCA(t)
	s := launchServer(t, ca, serverOpts{noPassword: true})
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("server started without a master password")
	}
	if s.cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("exit code 0")
	}
	lines := strings.Split(strings.TrimSpace(s.logs.String()), "\n")
	first := lines[0]
	if !strings.Contains(strings.ToLower(first), "master password") || strings.HasPrefix(strings.TrimSpace(first), "{") {
		t.Errorf("the first line of output is %q; want a readable line saying the master password is missing\nall of it:\n%s", first, s.logs.String())
	}
	if len(first) > 300 {
		t.Errorf("the first line is %d characters long: not a message a user reads", len(first))
	}
	// What to set follows at once, before any log line.
	var head []string
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "{") {
			break
		}
		head = append(head, l)
	}
	if text := strings.Join(head, "\n"); !strings.Contains(text, "AGENT_VAULT_MASTER_PASSWORD") {
		t.Errorf("the readable lines before the logs do not name AGENT_VAULT_MASTER_PASSWORD:\n%s", text)
	}
}

// Two brokers on one database share agents, operators, logins, requests
// and the audit trail: a rotation or a deletion on one is in effect on
// the other at once (the API reads the database on every request), and
// their sessions end within propagation.
func TestClusterIdentity(t *testing.T) {
	c := newCluster(t, 0)
	up := newUpstream(t, c.ca, true)
	drainHits(t, up)
	brokers := c.start(t, 2)
	a, b := brokers[0], brokers[1]
	a.putCredential("GITHUB_TOKEN", githubSecret)
	a.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	// Services reach the other broker through the change feed, within
	// propagation (TestClusterJourney checks that); identity does not
	// wait for it: agents, logins and requests are read from the
	// database on every request.
	knows := func(s *server, service string) {
		t.Helper()
		within(t, time.Now(), propagation, "the other broker knows service "+service, func() bool {
			return strings.Contains(s.call(s.admin(), "GET", "/api/v1/services", nil).body, `"`+service+`"`)
		})
	}
	knows(b, "github")

	// Both started together on Caddyfile.example: one local agent.
	var agents apiwire.AgentList
	b.must(b.admin(), "GET", "/api/v1/agents", nil, 200, &agents)
	n := 0
	for _, ag := range agents.Agents {
		if ag.Name == "local" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d agents named local after two brokers started at once, want 1", n)
	}

	bot := a.createAgent("ci-bot", []string{"github"}, "")
	sess := b.mintSession(bearer(bot.Token), apiwire.SessionRequest{TTL: "10m"})
	if sess.Agent != "ci-bot" {
		t.Errorf("a session minted on B with ci-bot's token (made on A) names agent %q", sess.Agent)
	}
	var rot apiwire.Agent
	a.must(a.admin(), "POST", "/api/v1/agents/ci-bot/rotate", nil, 200, &rot)
	if r := b.call(bearer(bot.Token), "GET", "/api/v1/sessions", nil); r.status != 401 {
		t.Errorf("the old token on B right after a rotation on A: %s, want 401", r)
	}
	b.must(bearer(rot.Token), "GET", "/api/v1/sessions", nil, 200, nil)

	// Operators and logins are cluster-wide.
	a.createOperator("adam", operatorPassword, "admin")
	l := b.login("adam", operatorPassword)
	a.must(bearer(l.Token), "GET", "/api/v1/agents", nil, 200, nil)
	b.must(bearer(l.Token), "POST", "/api/v1/logout", nil, 204, nil)
	if r := a.call(bearer(l.Token), "GET", "/api/v1/agents", nil); r.status != 401 {
		t.Errorf("a login ended on B still works on A: %s", r)
	}

	// A request made on A is decided on B; the audit trail is one.
	var req apiwire.AccessRequest
	a.putService("stripe", passthrough("api.stripe.example"))
	knows(b, "stripe") // the decision below is B's
	a.must(bearer(rot.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, 201, &req)
	b.must(b.admin(), "POST", "/api/v1/requests/"+req.ID+"/approve", nil, 200, nil)
	entries, _ := a.auditAll(nil)
	if len(findAudit(entries, "request.approve", req.ID)) != 1 || len(findAudit(entries, "agent.rotate", "ci-bot")) != 1 {
		t.Errorf("A's audit trail lacks B's approval or A's rotation")
	}

	// Deleting the agent on A ends its session (minted on B) at B's proxy.
	start := time.Now()
	a.must(a.admin(), "DELETE", "/api/v1/agents/ci-bot", nil, 204, nil)
	within(t, start, propagation, "B's proxy refuses the deleted agent's session", func() bool {
		code, _, err := connectStatus(b.proxyAddr, up.hostPort(), sess.Token)
		return err == nil && code == http.StatusProxyAuthRequired
	})

	// A lapsed lease ends the session on every broker.
	leased := a.mintSession(a.admin(), apiwire.SessionRequest{TTL: "10m", Lease: true})
	lr := apiwire.LeaseRenewal{}
	b.must(b.admin(), "POST", "/api/v1/sessions/"+leased.ID+"/renew", nil, 200, &lr)
	if leased.LeaseExpiresAt == nil || !lr.LeaseExpiresAt.After(*leased.LeaseExpiresAt) {
		t.Errorf("a renewal on B did not move the lease: %v -> %v", leased.LeaseExpiresAt, lr.LeaseExpiresAt)
	}
	took := within(t, lr.LeaseExpiresAt, 5*time.Second+propagation, "B's proxy refuses a session whose lease lapsed", func() bool {
		code, _, err := connectStatus(b.proxyAddr, up.hostPort(), leased.Token)
		return err == nil && code == http.StatusProxyAuthRequired
	})
	if took < -time.Second {
		t.Errorf("the leased session ended %v before its renewed lease_expires_at", -took)
	}
}
