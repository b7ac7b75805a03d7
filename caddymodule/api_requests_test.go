package caddymodule

// Access requests: what an approval grants and says, its audit when
// the grant fails, the quota of pending requests, requests filed
// across the agent's deletion, and checks made before any I/O.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// TestApproveHostNamesTheGrant: a host two services cover (on
// different paths) is not granted by guess: a body-less approval is
// refused naming them; "grant" picks one (it must cover the host); the
// answer and the audit say what was granted.
func TestApproveHostNamesTheGrant(t *testing.T) {
	pl := newPipeline(t, pipelineConfig{
		services: []services.Service{
			{Name: "gh-admin", Host: "api.gh.example/admin/*", Auth: services.Auth{Type: services.AuthPassthrough}},
			{Name: "gh-read", Host: "api.gh.example/repos/*", Auth: services.Auth{Type: services.AuthPassthrough}},
			{Name: "npm", Host: "registry.npm.example", Auth: services.Auth{Type: services.AuthPassthrough}},
		},
		stores: []storebackends.Store{newWritableStore()},
	})
	agent := pl.createAgent(t, "ci-bot", []string{"npm"}, "1h")
	var req apiwire.AccessRequest
	pl.must(t, asToken(agent.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "api.gh.example", Reason: "read repos"}, 201, &req)
	approve := "/api/v1/requests/" + req.ID + "/approve"
	wantAPIError(t, "a body-less approval of a host two services cover", pl.call(t, pl.admin(), "POST", approve, nil), 400,
		"services gh-admin, gh-read cover api.gh.example", `{"grant": "<name>"}`)
	wantAPIError(t, "a grant that does not cover the host", pl.call(t, pl.admin(), "POST", approve, apiwire.AccessRequestApprove{Grant: "npm"}), 400, "does not cover")
	wantAPIError(t, "a grant of no service", pl.call(t, pl.admin(), "POST", approve, apiwire.AccessRequestApprove{Grant: "nosuch"}), 400, "unknown service")
	wantAPIError(t, "a grant that is no name", pl.call(t, pl.admin(), "POST", approve, apiwire.AccessRequestApprove{Grant: "No Name"}), 400, "invalid service name")
	svc := services.Service{Name: "gh-all", Host: "api.gh.example", Auth: services.Auth{Type: services.AuthPassthrough}}
	wantAPIError(t, "both a grant and a service", pl.call(t, pl.admin(), "POST", approve, apiwire.AccessRequestApprove{Grant: "gh-read", Service: &svc}), 400, "at most one")
	var got apiwire.Agent
	pl.must(t, pl.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &got)
	if !slices.Equal(got.Services, []string{"npm"}) {
		t.Fatalf("refused approvals granted %v", got.Services)
	}
	var approved apiwire.AccessRequest
	pl.must(t, pl.admin(), "POST", approve, apiwire.AccessRequestApprove{Grant: "gh-read"}, 200, &approved)
	if approved.Granted != "gh-read" || approved.Status != apiwire.RequestApproved {
		t.Errorf("approval answered %+v, want granted gh-read", approved)
	}
	pl.must(t, pl.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &got)
	if !slices.Equal(got.Services, []string{"gh-read", "npm"}) {
		t.Errorf("after granting gh-read: %v", got.Services)
	}
	if e := pl.auditEntries(t, url.Values{"target": {req.ID}, "action": {"request.approve"}}); len(e) != 1 || e[0].Detail != "granted service gh-read to agent ci-bot" {
		t.Errorf("audit of the approval: %+v", e)
	}
	// One service covering the host: granted without a body, and named.
	pl.must(t, asToken(agent.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "registry.npm.example"}, 201, &req)
	other := pl.createAgent(t, "other", []string{"gh-read"}, "1h")
	pl.must(t, asToken(other.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "registry.npm.example"}, 201, &req)
	pl.must(t, pl.admin(), "POST", "/api/v1/requests/"+req.ID+"/approve", nil, 200, &approved)
	if approved.Granted != "npm" {
		t.Errorf("a body-less approval of a host one service covers: %+v", approved)
	}
	// A service request: "grant" may only repeat its service.
	pl.must(t, asToken(other.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "gh-admin"}, 201, &req)
	wantAPIError(t, "a grant of another service", pl.call(t, pl.admin(), "POST", "/api/v1/requests/"+req.ID+"/approve", apiwire.AccessRequestApprove{Grant: "npm"}), 400, "asks for service gh-admin")
	pl.must(t, pl.admin(), "POST", "/api/v1/requests/"+req.ID+"/approve", apiwire.AccessRequestApprove{Grant: "gh-admin"}, 200, &approved)
	if approved.Granted != "gh-admin" {
		t.Errorf("approving a service request: %+v", approved)
	}
}

// failingOps fails the named method of the identity store with a
// database error (marked as the adapters mark one).
type failingOps struct {
	identityStore
	fail string
	err  error
}

func (f failingOps) Operator(ctx context.Context, name string) (state.OperatorRow, bool, error) {
	if f.fail == "Operator" {
		return state.OperatorRow{}, false, &stateError{f.err}
	}
	return f.identityStore.Operator(ctx, name)
}

func (f failingOps) PendingAccessRequest(ctx context.Context, agent, service, host string) (state.AccessRequestRow, bool, error) {
	if f.fail == "PendingAccessRequest" {
		return state.AccessRequestRow{}, false, &stateError{f.err}
	}
	return f.identityStore.PendingAccessRequest(ctx, agent, service, host)
}

func (f failingOps) AccessRequest(ctx context.Context, id string) (state.AccessRequestRow, bool, error) {
	if f.fail == "AccessRequest" {
		return state.AccessRequestRow{}, false, &stateError{f.err}
	}
	return f.identityStore.AccessRequest(ctx, id)
}

func (f failingOps) GrantAgentService(ctx context.Context, name, service string, at time.Time) (bool, error) {
	if f.fail == "GrantAgentService" {
		return false, &stateError{f.err}
	}
	return f.identityStore.GrantAgentService(ctx, name, service, at)
}

func (f failingOps) ListAgents(ctx context.Context) ([]state.AgentRow, error) {
	if f.fail == "ListAgents" {
		return nil, &stateError{f.err}
	}
	return f.identityStore.ListAgents(ctx)
}

// dbDown is a database error whose text names what must stay in the
// log: host, user and database.
var dbDown = errors.New("state postgres: failed to connect to `host=db.internal.example user=vault_admin database=agentvault`: dial error")

// TestDatabaseTextStaysInTheLog: whoever calls (nobody yet, at login;
// an agent; an operator), a failing database is 503 with a fixed text,
// and the detail is in the broker's log.
func TestDatabaseTextStaysInTheLog(t *testing.T) {
	pl, _ := identityPipeline(t)
	agent := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	for _, c := range []struct {
		what, fail   string
		call         apiCall
		method, path string
		body         any
	}{
		{"an unauthenticated login", "Operator", apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "alice", Password: testPassword}},
		{"an agent's request", "PendingAccessRequest", asToken(agent.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}},
		{"an operator's list", "ListAgents", pl.admin(), "GET", "/api/v1/agents", nil},
	} {
		pl.setIDs(func(ids identityStore) identityStore {
			return failingOps{identityStore: ids, fail: c.fail, err: dbDown}
		})
		a := pl.call(t, c.call, c.method, c.path, c.body)
		wantAPIError(t, c.what, a, 503, stateUnavailableText)
		if strings.Contains(a.body, "vault_admin") || strings.Contains(a.body, "db.internal") {
			t.Errorf("%s: the database's text reaches the caller: %s", c.what, a.body)
		}
	}
	pl.setIDs(func(ids identityStore) identityStore { return ids })
	if !strings.Contains(pl.logs.String(), "vault_admin") {
		t.Error("the database's text is not in the log either")
	}
	// A session renewal whose store fails: the same.
	s := pl.mint(t, asToken(agent.Token), apiwire.SessionRequest{TTL: "10m", Lease: true})
	pl.db.Close()
	a := pl.call(t, asToken(agent.Token), "POST", "/api/v1/sessions/"+s.ID+"/renew", nil)
	if a.status != 503 || a.errText() != stateUnavailableText {
		t.Errorf("a renewal with the database closed: %d %s", a.status, a.body)
	}
}

// TestApproveAuditedWhenTheGrantFails: an approval whose grant fails
// stays approved, and the trail says so, with the failure.
func TestApproveAuditedWhenTheGrantFails(t *testing.T) {
	pl, _ := identityPipeline(t)
	agent := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	var req apiwire.AccessRequest
	pl.must(t, asToken(agent.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, 201, &req)
	pl.setIDs(func(ids identityStore) identityStore {
		return failingOps{identityStore: ids, fail: "GrantAgentService", err: errors.New("state sqlite: database is locked")}
	})
	a := pl.call(t, pl.admin(), "POST", "/api/v1/requests/"+req.ID+"/approve", nil)
	pl.setIDs(func(ids identityStore) identityStore { return ids })
	wantAPIError(t, "an approval whose grant fails", a, 503, "is approved, but granting service stripe to agent ci-bot failed", "PATCH /api/v1/agents/ci-bot")
	entries := pl.auditEntries(t, url.Values{"target": {req.ID}, "action": {"request.approve"}})
	if len(entries) != 1 || !strings.Contains(entries[0].Detail, "failed") || !strings.Contains(entries[0].Detail, "stripe") {
		t.Fatalf("audit of the approval: %+v", entries)
	}
	if strings.Contains(entries[0].Detail, "database is locked") {
		t.Errorf("the database's text in the audit trail: %q", entries[0].Detail)
	}
}

// TestPendingRequestQuota: an agent has at most maxPendingRequests
// pending requests; asking again for one it has is answered with it.
func TestPendingRequestQuota(t *testing.T) {
	pl, _ := identityPipeline(t)
	agent := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	tok := asToken(agent.Token)
	var first apiwire.AccessRequest
	for i := range maxPendingRequests {
		var r apiwire.AccessRequest
		pl.must(t, tok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: fmt.Sprintf("h%d.flood.example", i), Reason: strings.Repeat("x", 500)}, 201, &r)
		if i == 0 {
			first = r
		}
	}
	wantAPIError(t, "one more", pl.call(t, tok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "more.flood.example"}), 429,
		"agent ci-bot has 20 pending access requests; wait for an operator")
	pl.must(t, tok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "h0.flood.example"}, 200, nil)
	// Another agent has a quota of its own; a decision frees a place.
	other := pl.createAgent(t, "other", []string{"github"}, "1h")
	pl.must(t, asToken(other.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "more.flood.example"}, 201, nil)
	pl.must(t, pl.admin(), "POST", "/api/v1/requests/"+first.ID+"/deny", nil, 200, nil)
	pl.must(t, tok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "more.flood.example"}, 201, nil)
}

// pausingPending pauses the first PendingAccessRequest, after it
// returned, until release is closed.
type pausingPending struct {
	identityStore
	paused  atomic.Bool
	read    chan struct{}
	release chan struct{}
}

func (p *pausingPending) PendingAccessRequest(ctx context.Context, agent, service, host string) (state.AccessRequestRow, bool, error) {
	row, ok, err := p.identityStore.PendingAccessRequest(ctx, agent, service, host)
	if p.paused.CompareAndSwap(false, true) {
		close(p.read)
		<-p.release
	}
	return row, ok, err
}

// TestRequestAcrossDeleteAndRecreate: a request filed with the old
// token while the agent is deleted and made again under its name is
// refused, and cannot be approved for the new agent.
func TestRequestAcrossDeleteAndRecreate(t *testing.T) {
	pl, _ := identityPipeline(t)
	old := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	p := &pausingPending{read: make(chan struct{}), release: make(chan struct{})}
	pl.setIDs(func(ids identityStore) identityStore { p.identityStore = ids; return p })
	done := make(chan apiAnswer)
	go func() {
		done <- pl.call(t, asToken(old.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe", Reason: "old, compromised bot"})
	}()
	<-p.read
	pl.must(t, pl.admin(), "DELETE", "/api/v1/agents/ci-bot", nil, 204, nil)
	pl.setSessionClock(time.Second)
	pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	close(p.release)
	a := <-done
	wantAPIError(t, "a request across a delete and re-create", a, 403, "agent ci-bot was deleted")
	var l apiwire.AccessRequestList
	pl.must(t, pl.admin(), "GET", "/api/v1/requests?status=pending", nil, 200, &l)
	if len(l.Requests) != 0 {
		t.Errorf("pending after the delete and re-create: %+v", l.Requests)
	}
}

// TestRequestChecksBeforeIO: a request or an approval with a bad body
// is refused (400) before anything is read: the database failing does
// not change the answer.
func TestRequestChecksBeforeIO(t *testing.T) {
	pl, _ := identityPipeline(t)
	agent := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	sess := pl.mint(t, asToken(agent.Token), apiwire.SessionRequest{TTL: "10m"})
	var req apiwire.AccessRequest
	pl.must(t, asToken(agent.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "x.example"}, 201, &req)
	pl.setIDs(func(ids identityStore) identityStore {
		return failingAgentReads{failingOps{identityStore: ids, fail: "AccessRequest", err: dbDown}}
	})
	for _, c := range []struct {
		what string
		body apiwire.AccessRequestCreate
		text string
	}{
		{"a bad host", apiwire.AccessRequestCreate{Host: "http://x.example/"}, "host"},
		{"an unknown service", apiwire.AccessRequestCreate{Service: "nosuch"}, "unknown service"},
		{"a control character", apiwire.AccessRequestCreate{Host: "x.example", Reason: "a\x1b[31m"}, "control"},
	} {
		// Through the session: its agent is read from the database.
		wantAPIError(t, c.what, pl.call(t, asToken(sess.Token), "POST", "/api/v1/requests", c.body), 400, c.text)
	}
	bad := services.Service{Name: "example", Host: "x.example", Auth: services.Auth{Type: "bogus"}}
	wantAPIError(t, "an approval with an invalid service", pl.call(t, pl.admin(), "POST", "/api/v1/requests/"+req.ID+"/approve", apiwire.AccessRequestApprove{Service: &bad}), 400, "service")
	pl.setIDs(func(ids identityStore) identityStore { return ids })
}

// TestInvalidNameLoginsLimited: logins with names no operator can have
// are refused without a lookup, are charged to the address's budget
// (so that an unauthenticated client cannot send them without limit)
// and are not audited one by one.
func TestInvalidNameLoginsLimited(t *testing.T) {
	pl, _ := identityPipeline(t)
	statuses := map[int]int{}
	for i := range 30 {
		a := pl.call(t, apiCall{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: fmt.Sprintf("NOT VALID %d", i), Password: "whatever-whatever"})
		statuses[a.status]++
		if a.status == 401 && a.errText() != "wrong operator name or password" {
			t.Errorf("an invalid name's answer: %s", a.body)
		}
	}
	if statuses[401] != 10 || statuses[429] != 20 {
		t.Errorf("30 invalid-name logins from one address: %v, want 10 refused as wrong and 20 rate limited", statuses)
	}
	if n := len(pl.auditEntries(t, url.Values{"action": {"login.failed"}})); n != 0 {
		t.Errorf("%d login.failed entries for invalid names", n)
	}
	if got := strings.Count(pl.logs.String(), "logins refused: names no operator can have"); got != 1 {
		t.Errorf("the count of invalid names was logged %d times, want once within a minute", got)
	}
}

// TestLoginRehash: a login whose stored hash has other parameters
// replaces it with a current one, and ends no other login.
func TestLoginRehash(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createOperator(t, "alice", testPassword, "admin")
	first := pl.login(t, "alice", testPassword)
	row, _, err := pl.db.Operator(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	// The same password under weaker parameters, as an older release
	// (or a hand-made row) stored it.
	weak := weakPHC(t, testPassword)
	if _, err := pl.db.RehashOperatorPassword(context.Background(), "alice", row.PasswordHash, weak); err != nil {
		t.Fatal(err)
	}
	second := pl.login(t, "alice", testPassword)
	now, _, _ := pl.db.Operator(context.Background(), "alice")
	if now.PasswordHash == weak || !strings.HasPrefix(now.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("the weak hash was not replaced: %q", now.PasswordHash)
	}
	for _, l := range []apiwire.Login{first, second} {
		pl.must(t, asToken(l.Token), "GET", "/api/v1/agents", nil, 200, nil)
	}
	pl.login(t, "alice", testPassword)
	if e := pl.auditEntries(t, url.Values{"action": {"operator.update"}}); len(e) != 0 {
		t.Errorf("a rehash audited as a change: %+v", e)
	}
}

// weakPHC is an argon2id PHC string of pw with t=1 (parameters
// CheckPassword reads but NeedsRehash replaces).
func weakPHC(t *testing.T, pw string) string {
	t.Helper()
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(pw), salt, 1, 19456, 1, 32)
	b64 := base64.RawStdEncoding
	return "$argon2id$v=19$m=19456,t=1,p=1$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
}
