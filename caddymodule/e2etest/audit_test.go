package e2etest

// Issue 10, the audit trail: every management change recorded with the
// right actor, action and target and the client's address, never a
// secret; filters and paging.

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

func TestAuditTrail(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	drainHits(t, up)
	s := startServer(t, ca, serverOpts{})
	start := time.Now().Add(-time.Second)
	const (
		credValue  = "ghp_auditTrailValue0123456789abcdef"
		tempValue  = "temp_auditTrailValue0123456789"
		olgaPw     = "olga-password-0123"
		adamPw     = "adam-password-0123"
		wrongPw    = "wrong-password-0123"
		tmpPw      = "tmp-op-password-0123"
		tmpPwNew   = "tmp-op-new-password-0123"
		actorAdmin = apiwire.ActorAdminToken
		actorOp    = apiwire.ActorOperator
		actorAgent = apiwire.ActorAgent
		actorSess  = apiwire.ActorSession
	)
	type exp struct{ actor, kind, action, target string }
	var want []exp
	secrets := []string{credValue, tempValue, olgaPw, adamPw, wrongPw, tmpPw, tmpPwNew, s.adminToken()}
	admin := s.admin()

	s.must(admin, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "olga", Password: olgaPw, Role: "owner"}, 201, nil)
	want = append(want, exp{"admin-token", actorAdmin, "operator.create", "olga"})
	olgaLogin := s.login("olga", olgaPw)
	olga := bearer(olgaLogin.Token)
	want = append(want, exp{"olga", actorOp, "login", "olga"})
	s.must(olga, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "adam", Password: adamPw, Role: "admin"}, 201, nil)
	s.must(olga, "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "tmp-op", Password: tmpPw, Role: "viewer"}, 201, nil)
	newPw := tmpPwNew
	s.must(olga, "PATCH", "/api/v1/operators/tmp-op", apiwire.OperatorPatchRequest{Password: &newPw}, 200, nil)
	s.must(olga, "DELETE", "/api/v1/operators/tmp-op", nil, http.StatusNoContent, nil)
	want = append(want,
		exp{"olga", actorOp, "operator.create", "adam"},
		exp{"olga", actorOp, "operator.create", "tmp-op"},
		exp{"olga", actorOp, "operator.update", "tmp-op"},
		exp{"olga", actorOp, "operator.delete", "tmp-op"})
	if r := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: "adam", Password: wrongPw}); r.status != 401 {
		t.Fatalf("wrong password: %s", r)
	}
	want = append(want, exp{"", "", "login.failed", "adam"})
	adamLogin := s.login("adam", adamPw)
	adam := bearer(adamLogin.Token)
	want = append(want, exp{"adam", actorOp, "login", "adam"})

	s.must(adam, "PUT", "/api/v1/credentials/GITHUB_TOKEN", map[string]string{"value": credValue}, 201, nil)
	s.must(adam, "PUT", "/api/v1/credentials/TEMP_CRED", map[string]string{"value": tempValue}, 201, nil)
	s.must(adam, "DELETE", "/api/v1/credentials/TEMP_CRED", nil, http.StatusNoContent, nil)
	s.must(admin, "PUT", "/api/v1/services/github", bearerService(up.hostPort(), "GITHUB_TOKEN"), 200, nil)
	s.must(adam, "PUT", "/api/v1/services/tmp-svc", passthrough("tmp.example"), 200, nil)
	s.must(adam, "DELETE", "/api/v1/services/tmp-svc", nil, http.StatusNoContent, nil)
	want = append(want,
		exp{"adam", actorOp, "credential.put", "GITHUB_TOKEN"},
		exp{"adam", actorOp, "credential.put", "TEMP_CRED"},
		exp{"adam", actorOp, "credential.delete", "TEMP_CRED"},
		exp{"admin-token", actorAdmin, "service.put", "github"},
		exp{"adam", actorOp, "service.put", "tmp-svc"},
		exp{"adam", actorOp, "service.delete", "tmp-svc"})

	var bot apiwire.Agent
	s.must(adam, "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: "ci-bot", Services: []string{"github"}}, 201, &bot)
	ttl := "30m"
	s.must(adam, "PATCH", "/api/v1/agents/ci-bot", apiwire.AgentPatchRequest{MaxSessionTTL: &ttl}, 200, nil)
	var rot apiwire.Agent
	s.must(adam, "POST", "/api/v1/agents/ci-bot/rotate", nil, 200, &rot)
	secrets = append(secrets, bot.Token, rot.Token, olgaLogin.Token, adamLogin.Token)
	want = append(want,
		exp{"adam", actorOp, "agent.create", "ci-bot"},
		exp{"adam", actorOp, "agent.update", "ci-bot"},
		exp{"adam", actorOp, "agent.rotate", "ci-bot"})

	agent := bearer(rot.Token)
	own := s.mintSession(agent, apiwire.SessionRequest{TTL: "10m"})
	s.must(agent, "DELETE", "/api/v1/sessions/"+own.ID, nil, http.StatusNoContent, nil)
	byToken := s.mintSession(admin, apiwire.SessionRequest{TTL: "10m"})
	s.must(adam, "DELETE", "/api/v1/sessions/"+byToken.ID, nil, http.StatusNoContent, nil)
	live := s.mintSession(agent, apiwire.SessionRequest{TTL: "10m"})
	secrets = append(secrets, own.Token, byToken.Token, live.Token)
	want = append(want,
		exp{"ci-bot", actorAgent, "session.create", own.ID},
		exp{"ci-bot", actorAgent, "session.revoke", own.ID},
		exp{"admin-token", actorAdmin, "session.create", byToken.ID},
		exp{"adam", actorOp, "session.revoke", byToken.ID},
		exp{"ci-bot", actorAgent, "session.create", live.ID})

	s.putService("stripe", passthrough("api.stripe.example"))
	s.putService("pager", passthrough("pager.example"))
	var r1, r2, r3 apiwire.AccessRequest
	s.must(agent, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, 201, &r1)
	s.must(bearer(live.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "pager"}, 201, &r2)
	s.must(bearer(live.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "new.example"}, 201, &r3)
	s.must(adam, "POST", "/api/v1/requests/"+r1.ID+"/approve", nil, 200, nil)
	s.must(adam, "POST", "/api/v1/requests/"+r2.ID+"/deny", apiwire.AccessRequestDeny{Reason: "no"}, 200, nil)
	want = append(want,
		exp{"admin-token", actorAdmin, "service.put", "stripe"},
		exp{"ci-bot", actorAgent, "request.create", r1.ID},
		exp{"ci-bot", actorSess, "request.create", r2.ID},
		exp{"ci-bot", actorSess, "request.create", r3.ID},
		exp{"adam", actorOp, "request.approve", r1.ID},
		exp{"adam", actorOp, "request.deny", r2.ID})

	s.must(adam, "DELETE", "/api/v1/agents/ci-bot", nil, http.StatusNoContent, nil)
	s.must(adam, "POST", "/api/v1/logout", nil, http.StatusNoContent, nil)
	want = append(want,
		exp{"adam", actorOp, "agent.delete", "ci-bot"},
		exp{"adam", actorOp, "logout", "adam"})

	// Everything is there, once, as said, from the client's address.
	all, raw := s.auditAll(url.Values{"limit": {"1000"}})
	for _, w := range want {
		got := findAudit(all, w.action, w.target)
		if len(got) == 0 {
			t.Errorf("no audit entry %s %s (want actor %s)", w.action, w.target, w.actor)
			continue
		}
		e := got[len(got)-1] // the oldest
		if w.actor != "" && (e.Actor != w.actor || e.ActorKind != w.kind) {
			t.Errorf("audit %s %s: actor %q kind %q, want %q %q", w.action, w.target, e.Actor, e.ActorKind, w.actor, w.kind)
		}
		if e.Client != "127.0.0.1" {
			t.Errorf("audit %s %s: client %q, want 127.0.0.1", w.action, w.target, e.Client)
		}
		if e.ID == "" || e.Time.Before(start) || e.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("audit %s %s: id %q time %v", w.action, w.target, e.ID, e.Time)
		}
	}
	// The deleted agent's sessions were revoked with it: the trail says
	// which (an entry of their own, or the deletion's detail).
	if del := findAudit(all, "agent.delete", "ci-bot"); len(findAudit(all, "session.revoke", live.ID)) == 0 &&
		(len(del) == 0 || !strings.Contains(del[0].Detail, live.ID)) {
		t.Errorf("deleting ci-bot revoked session %s, and the audit trail does not say so", live.ID)
	}
	for _, sec := range secrets {
		if strings.Contains(raw, sec) {
			t.Errorf("the audit output holds a secret (%.10s...)", sec)
		}
	}
	// Newest first, ids unique.
	seen := map[string]bool{}
	for i, e := range all {
		if seen[e.ID] {
			t.Errorf("audit entry %s listed twice", e.ID)
		}
		seen[e.ID] = true
		if i > 0 && e.Time.After(all[i-1].Time) {
			t.Errorf("audit is not newest first: %v after %v", e.Time, all[i-1].Time)
		}
	}

	// Filters.
	byAdam, _ := s.auditAll(url.Values{"actor": {"adam"}})
	nAdam := 0
	for _, e := range all {
		if e.Actor == "adam" {
			nAdam++
		}
	}
	if len(byAdam) != nAdam || nAdam == 0 {
		t.Errorf("?actor=adam: %d entries, want %d", len(byAdam), nAdam)
	}
	for _, e := range byAdam {
		if e.Actor != "adam" {
			t.Errorf("?actor=adam lists an entry of %q", e.Actor)
		}
	}
	creates, _ := s.auditAll(url.Values{"action": {"agent.create"}})
	if len(creates) == 0 || len(creates) != len(findAudit(all, "agent.create", "")) {
		t.Errorf("?action=agent.create: %d entries, want %d", len(creates), len(findAudit(all, "agent.create", "")))
	}
	for _, e := range creates {
		if e.Action != "agent.create" {
			t.Errorf("?action=agent.create lists %s", e.Action)
		}
	}
	both, _ := s.auditAll(url.Values{"actor": {"adam"}, "action": {"agent.create"}})
	if len(both) != 1 || both[0].Target != "ci-bot" {
		t.Errorf("?actor=adam&action=agent.create: %+v, want ci-bot's creation only", both)
	}
	byTarget, _ := s.auditAll(url.Values{"target": {"ci-bot"}})
	var actions []string
	for _, e := range byTarget {
		actions = append(actions, e.Action)
	}
	if !slices.Equal(actions, []string{"agent.delete", "agent.rotate", "agent.update", "agent.create"}) {
		t.Errorf("?target=ci-bot lists %v, want agent.delete, .rotate, .update, .create (newest first)", actions)
	}

	// Paging: limit=3 and next_before walk every entry once, in order.
	var paged []string
	q := url.Values{"limit": {"3"}}
	for pages := 0; ; pages++ {
		l := s.auditPage(admin, q)
		if len(l.Entries) > 3 {
			t.Fatalf("limit=3 returned %d entries", len(l.Entries))
		}
		for _, e := range l.Entries {
			paged = append(paged, e.ID)
		}
		if l.NextBefore == "" || pages > len(all) {
			break
		}
		q.Set("before", l.NextBefore)
	}
	var ids []string
	for _, e := range all {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(paged, ids) {
		t.Errorf("paging with limit=3 and before=next_before gave %d entries, want the %d of one page, in the same order", len(paged), len(ids))
	}
	// before= also takes an RFC 3339 time.
	if l := s.auditPage(admin, url.Values{"before": {start.Add(-time.Hour).UTC().Format(time.RFC3339)}}); len(l.Entries) != 0 {
		t.Errorf("before=an hour before the first change: %d entries, want 0", len(l.Entries))
	}
	if l := s.auditPage(admin, url.Values{"before": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, "limit": {"1000"}}); len(l.Entries) != len(all) {
		t.Errorf("before=an hour from now: %d entries, want %d", len(l.Entries), len(all))
	}
	for _, bad := range []string{"before=yesterday", "limit=-1", "limit=x"} {
		if r := s.call(admin, "GET", "/api/v1/audit?"+bad, nil); r.status != 400 {
			t.Errorf("GET /api/v1/audit?%s: %s, want 400", bad, r)
		}
	}
	// The default page is at most 100.
	if l := s.auditPage(admin, url.Values{}); len(l.Entries) > 100 {
		t.Errorf("the default page has %d entries, want <= 100", len(l.Entries))
	}

	// Nor does the server's log.
	for _, sec := range secrets {
		if strings.Contains(s.logs.String(), sec) {
			t.Errorf("the server log holds a secret (%.10s...)", sec)
		}
	}
}

// Audit entries survive a restart: they are in the state database.
func TestAuditSurvivesRestart(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("KEEP_ME", "keep-me-value-0123")
	before, _ := s.auditAll(url.Values{"action": {"credential.put"}})
	s.stop()
	s2 := startServer(t, ca, serverOpts{dataDir: s.dataDir})
	after, _ := s2.auditAll(url.Values{"action": {"credential.put"}})
	if len(before) != 1 || len(after) != 1 || before[0].ID != after[0].ID || after[0].Target != "KEEP_ME" {
		t.Errorf("credential.put before the restart %+v, after %+v", before, after)
	}
}
