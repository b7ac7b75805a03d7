package caddymodule

// Agents across concurrent changes: a PATCH of one field never writes
// back a stale copy of another, a narrowing that cannot check every
// broker says so, rotation may revoke the agent's sessions, and an
// agent made again under a deleted one's name is someone else.

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// pausingTokenLookups pauses the first agent token lookup, after it
// returned (the caller is authenticated as the agent it found), until
// release is closed.
type pausingTokenLookups struct {
	identityStore
	paused  atomic.Bool
	read    chan struct{}
	release chan struct{}
}

func pauseTokenLookup() *pausingTokenLookups {
	return &pausingTokenLookups{read: make(chan struct{}), release: make(chan struct{})}
}

func (p *pausingTokenLookups) AgentByTokenHash(ctx context.Context, hash [32]byte) (state.AgentRow, bool, error) {
	row, ok, err := p.identityStore.AgentByTokenHash(ctx, hash)
	if p.paused.CompareAndSwap(false, true) {
		close(p.read)
		<-p.release
	}
	return row, ok, err
}

// pausingUpdates pauses the first UpdateAgent until release is closed,
// before it writes.
type pausingUpdates struct {
	identityStore
	paused  atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (p *pausingUpdates) UpdateAgent(ctx context.Context, name string, services []string, maxTTL time.Duration, at time.Time) (state.AgentRow, bool, error) {
	// Only the first call waits (sync.Once would hold up the others too).
	if p.paused.CompareAndSwap(false, true) {
		close(p.reached)
		<-p.release
	}
	return p.identityStore.UpdateAgent(ctx, name, services, maxTTL, at)
}

// TestAgentPatchNoLostUpdate: a PATCH of max_session_ttl alone, in
// flight while another PATCH narrows the agent (or an approval grants
// it a service), must not write back the services it would have read:
// the narrowed-away service stays away, the grant stays.
func TestAgentPatchNoLostUpdate(t *testing.T) {
	for _, other := range []string{"narrowing", "grant"} {
		t.Run(other, func(t *testing.T) {
			pl, _ := identityPipeline(t)
			ag := pl.createAgent(t, "ci-bot", []string{"github", "npm"}, "1h")
			var req apiwire.AccessRequest
			pl.must(t, asToken(ag.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, 201, &req)
			p := &pausingUpdates{reached: make(chan struct{}), release: make(chan struct{})}
			pl.setIDs(func(ids identityStore) identityStore { p.identityStore = ids; return p })
			ttl := "30m"
			done := make(chan apiAnswer)
			go func() {
				done <- pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/ci-bot", apiwire.AgentPatchRequest{MaxSessionTTL: &ttl})
			}()
			<-p.reached // the TTL-only PATCH has checked its body, and writes next
			switch other {
			case "narrowing":
				pl.must(t, pl.admin(), "PATCH", "/api/v1/agents/ci-bot", apiwire.AgentPatchRequest{Services: []string{"github"}}, 200, nil)
			case "grant":
				pl.must(t, pl.admin(), "POST", "/api/v1/requests/"+req.ID+"/approve", nil, 200, nil)
			}
			close(p.release)
			var patched apiwire.Agent
			if a := <-done; a.status != 200 || json.Unmarshal([]byte(a.body), &patched) != nil {
				t.Fatalf("TTL-only PATCH: %d %s", a.status, a.body)
			}
			want := map[string][]string{"narrowing": {"github"}, "grant": {"github", "npm", "stripe"}}[other]
			var now apiwire.Agent
			pl.must(t, pl.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &now)
			if !slices.Equal(now.Services, want) || now.MaxSessionTTL != "30m" {
				t.Errorf("after the %s and the TTL-only PATCH: services %v ttl %s, want %v and 30m", other, now.Services, now.MaxSessionTTL, want)
			}
			// The answer is the committed row, not a half-read one.
			if !slices.Equal(patched.Services, want) || patched.MaxSessionTTL != "30m" {
				t.Errorf("the TTL-only PATCH answered %v %s, want the committed %v 30m", patched.Services, patched.MaxSessionTTL, want)
			}
		})
	}
}

// TestAgentPatchValidatesFirst: a PATCH with a bad body reads nothing.
func TestAgentPatchValidatesFirst(t *testing.T) {
	pl, _ := identityPipeline(t)
	pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	pl.setIDs(func(ids identityStore) identityStore { return failingAgentReads{ids} })
	bad := "soon"
	wantAPIError(t, "a bad ttl", pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/ci-bot", apiwire.AgentPatchRequest{MaxSessionTTL: &bad}), 400, "max_session_ttl")
	wantAPIError(t, "an unknown service", pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/ci-bot", apiwire.AgentPatchRequest{Services: []string{"nosuch"}}), 400, "nosuch")
}

// failingAgentReads fails every read and write of an agent, so a test
// sees whether a handler got that far.
type failingAgentReads struct{ identityStore }

func (f failingAgentReads) Agent(context.Context, string) (state.AgentRow, bool, error) {
	return state.AgentRow{}, false, &stateError{errors.New("read agent: not expected")}
}

func (f failingAgentReads) UpdateAgent(context.Context, string, []string, time.Duration, time.Time) (state.AgentRow, bool, error) {
	return state.AgentRow{}, false, &stateError{errors.New("update agent: not expected")}
}

// TestAgentPatchSessionsUnchecked: a narrowing PATCH whose sessions
// cannot be brought in line with the store (another broker's may be
// missed), or whose revocation cannot be recorded, answers 503 and
// lists no revocation as done; the update stands.
func TestAgentPatchSessionsUnchecked(t *testing.T) {
	pl, _ := identityPipeline(t)
	ag := pl.createAgent(t, "wide", []string{"github", "npm"}, "")
	both := pl.mint(t, asToken(ag.Token), apiwire.SessionRequest{TTL: "20m"})

	pl.failSessions(errors.New("state sqlite: database is locked by user=secretuser"), nil)
	a := pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/wide", apiwire.AgentPatchRequest{Services: []string{"github"}})
	wantAPIError(t, "a narrowing whose sessions cannot be reloaded", a, 503,
		"agent wide updated, but its sessions could not be checked on every broker; retry the PATCH")
	if strings.Contains(a.body, "secretuser") {
		t.Errorf("the database's text in the answer: %s", a.body)
	}
	// This broker's copy was gone through all the same (fail closed).
	if st := pl.sessionStatus(t, both.ID); st != apiwire.SessionRevoked {
		t.Errorf("the out-of-limit session is %q", st)
	}
	var got apiwire.Agent
	pl.must(t, pl.admin(), "GET", "/api/v1/agents/wide", nil, 200, &got)
	if !slices.Equal(got.Services, []string{"github"}) {
		t.Errorf("the update did not stand: %v", got.Services)
	}

	// A revocation the store does not take is not listed, nor audited,
	// as done.
	pl.failSessions(nil, nil)
	gh := pl.mint(t, asToken(ag.Token), apiwire.SessionRequest{Services: []string{"github"}, TTL: "20m"})
	pl.failSessions(nil, errors.New("state sqlite: disk I/O error"))
	ttl := "5m"
	a = pl.call(t, pl.admin(), "PATCH", "/api/v1/agents/wide", apiwire.AgentPatchRequest{MaxSessionTTL: &ttl})
	wantAPIError(t, "a narrowing whose revocation is not recorded", a, 503, gh.ID, "not recorded", "retry the PATCH")
	pl.failSessions(nil, nil)
	for _, e := range pl.auditEntries(t, url.Values{"target": {gh.ID}, "action": {"session.revoke"}}) {
		if !strings.Contains(e.Detail, "on this broker only") {
			t.Errorf("an unrecorded revocation audited as done: %+v", e)
		}
	}
}

// TestAgentRotateRevokeSessions: rotation keeps the agent's sessions
// unless asked; ?revoke_sessions=true ends them all, on every broker,
// each audited.
func TestAgentRotateRevokeSessions(t *testing.T) {
	pl, up := identityPipeline(t)
	ag := pl.createAgent(t, "ci-bot", []string{"github"}, "")
	other := pl.createAgent(t, "other", []string{"github"}, "")
	s1 := pl.mint(t, asToken(ag.Token), apiwire.SessionRequest{TTL: "10m"})
	s2 := pl.mint(t, asToken(ag.Token), apiwire.SessionRequest{TTL: "10m", Lease: true})
	keep := pl.mint(t, asToken(other.Token), apiwire.SessionRequest{TTL: "10m"})
	tun := pl.openTunnel(t, asAgentSession(s1), up.hostPort)

	var rot apiwire.Agent
	pl.must(t, pl.admin(), "POST", "/api/v1/agents/ci-bot/rotate", nil, 200, &rot)
	if len(rot.RevokedSessions) != 0 || pl.sessionStatus(t, s1.ID) != apiwire.SessionActive {
		t.Fatalf("a plain rotation revoked %v", rot.RevokedSessions)
	}
	wantAPIError(t, "a bad revoke_sessions", pl.call(t, pl.admin(), "POST", "/api/v1/agents/ci-bot/rotate?revoke_sessions=yes", nil), 400, "revoke_sessions")
	pl.must(t, pl.admin(), "POST", "/api/v1/agents/ci-bot/rotate?revoke_sessions=true", nil, 200, &rot)
	if !slices.Equal(rot.RevokedSessions, sortedIDs(s1.ID, s2.ID)) || !strings.HasPrefix(rot.Token, "avt_") {
		t.Fatalf("rotate and revoke: %+v, want %s and %s revoked", rot, s1.ID, s2.ID)
	}
	if _, err := tun.br.ReadByte(); err == nil {
		t.Fatal("a revoked session's tunnel is open")
	}
	for id, want := range map[string]string{s1.ID: apiwire.SessionRevoked, s2.ID: apiwire.SessionRevoked, keep.ID: apiwire.SessionActive} {
		if st := pl.sessionStatus(t, id); st != want {
			t.Errorf("session %s is %q, want %q", id, st, want)
		}
	}
	if row, ok, err := pl.db.Session(context.Background(), s1.ID); err != nil || !ok || row.RevokedAt == nil {
		t.Errorf("the store: %+v %v %v, want revoked (every broker learns it)", row, ok, err)
	}
	for _, id := range []string{s1.ID, s2.ID} {
		if e := pl.auditEntries(t, url.Values{"target": {id}, "action": {"session.revoke"}}); len(e) != 1 || !strings.Contains(e[0].Detail, "rotated") {
			t.Errorf("audit of %s's revocation: %+v", id, e)
		}
	}
	if e := pl.auditEntries(t, url.Values{"target": {"ci-bot"}, "action": {"agent.rotate"}}); len(e) != 2 || e[0].Detail != "revoked 2 sessions" {
		t.Errorf("audit of the rotations: %+v", e)
	}
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// TestRecreatedAgentIsSomeoneElse: an agent made again under a deleted
// one's name does not see, end or renew the old one's sessions, nor
// list its requests.
func TestRecreatedAgentIsSomeoneElse(t *testing.T) {
	pl, _ := identityPipeline(t)
	old := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	s := pl.mint(t, asToken(old.Token), apiwire.SessionRequest{TTL: "10m", Lease: true})
	var req apiwire.AccessRequest
	pl.must(t, asToken(old.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, 201, &req)
	pl.must(t, pl.admin(), "POST", "/api/v1/requests/"+req.ID+"/deny", nil, 200, nil)
	pl.must(t, pl.admin(), "DELETE", "/api/v1/agents/ci-bot", nil, 204, nil)
	pl.setSessionClock(time.Second) // the new agent is made later
	nw := pl.createAgent(t, "ci-bot", []string{"npm"}, "1h")
	tok := asToken(nw.Token)
	var sl apiwire.SessionList
	pl.must(t, tok, "GET", "/api/v1/sessions", nil, 200, &sl)
	if len(sl.Sessions) != 0 {
		t.Errorf("the new ci-bot lists %d sessions of the old one", len(sl.Sessions))
	}
	wantAPIError(t, "renew the old one's session", pl.call(t, tok, "POST", "/api/v1/sessions/"+s.ID+"/renew", nil), 404, "no session "+s.ID)
	wantAPIError(t, "end the old one's session", pl.call(t, tok, "DELETE", "/api/v1/sessions/"+s.ID, nil), 404, "no session "+s.ID)
	var rl apiwire.AccessRequestList
	pl.must(t, tok, "GET", "/api/v1/requests", nil, 200, &rl)
	if len(rl.Requests) != 0 {
		t.Errorf("the new ci-bot lists the old one's requests: %+v", rl.Requests)
	}
	// An operator still sees both.
	pl.must(t, pl.admin(), "GET", "/api/v1/requests?agent=ci-bot", nil, 200, &rl)
	if len(rl.Requests) != 1 || rl.Requests[0].ID != req.ID {
		t.Errorf("the operator's list: %+v", rl.Requests)
	}
	// Its own, from now on, are listed.
	mine := pl.mint(t, tok, apiwire.SessionRequest{TTL: "10m"})
	pl.must(t, tok, "GET", "/api/v1/sessions", nil, 200, &sl)
	if len(sl.Sessions) != 1 || sl.Sessions[0].ID != mine.ID {
		t.Errorf("the new ci-bot's sessions: %+v", sl.Sessions)
	}
}

// TestMintAcrossDeleteAndRecreate: a mint with the old token, in flight
// while the agent is deleted and made again under its name (so that
// its session is stored after the deletion revoked the agent's), does
// not land on the new agent: the session is revoked before its token
// is handed out, 403, and both its creation and its revocation are in
// the audit trail.
func TestMintAcrossDeleteAndRecreate(t *testing.T) {
	pl, _ := identityPipeline(t)
	old := pl.createAgent(t, "ci-bot", []string{"github", "npm"}, "1h")
	p := pauseTokenLookup() // the mint is authenticated as the old agent
	pl.setIDs(func(ids identityStore) identityStore { p.identityStore = ids; return p })
	done := make(chan apiAnswer)
	go func() {
		done <- pl.call(t, asToken(old.Token), "POST", "/api/v1/sessions", apiwire.SessionRequest{TTL: "10m"})
	}()
	<-p.read
	pl.must(t, pl.admin(), "DELETE", "/api/v1/agents/ci-bot", nil, 204, nil)
	pl.setSessionClock(time.Second)
	pl.createAgent(t, "ci-bot", []string{"github", "npm"}, "1h")
	close(p.release)
	a := <-done
	wantAPIError(t, "a mint across a delete and re-create", a, 403, "agent ci-bot was deleted")
	if strings.Contains(a.body, "avs_") {
		t.Fatalf("the refused mint handed out a token: %s", a.body)
	}
	for _, s := range pl.sessionsOf(t, "ci-bot") {
		if s.Status == apiwire.SessionActive {
			t.Errorf("session %s of the old token is active", s.ID)
		}
		var actions []string
		for _, e := range pl.auditEntries(t, url.Values{"target": {s.ID}}) {
			actions = append(actions, e.Action)
		}
		slices.Sort(actions)
		if !slices.Equal(actions, []string{"session.create", "session.revoke"}) {
			t.Errorf("audit of the revoked-at-once session %s: %v", s.ID, actions)
		}
	}
}

// TestMintAcrossRotation: a mint with a token rotated while it was in
// flight is refused (the session revoked at once).
func TestMintAcrossRotation(t *testing.T) {
	pl, _ := identityPipeline(t)
	ag := pl.createAgent(t, "ci-bot", []string{"github"}, "1h")
	p := pauseTokenLookup()
	pl.setIDs(func(ids identityStore) identityStore { p.identityStore = ids; return p })
	done := make(chan apiAnswer)
	go func() {
		done <- pl.call(t, asToken(ag.Token), "POST", "/api/v1/sessions", apiwire.SessionRequest{TTL: "10m"})
	}()
	<-p.read
	pl.must(t, pl.admin(), "POST", "/api/v1/agents/ci-bot/rotate", nil, 200, nil)
	close(p.release)
	wantAPIError(t, "a mint across a rotation", <-done, 403, "token was rotated")
}
