package e2etest

// Issue 10, the permission table: every endpoint of the management API
// against every kind of token, on one real server, with the status the
// design's table gives and, for each refusal, a body that says why.

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// principal is one kind of caller of the management API.
type principal string

const (
	pNone       principal = "no token"
	pBad        principal = "unknown token"
	pSession    principal = "session token"
	pAgent      principal = "agent token"
	pViewer     principal = "viewer login"
	pAdmin      principal = "admin login"
	pOwner      principal = "owner login"
	pAdminToken principal = "admin token"
	// pBareSession is a session minted with the admin token: it belongs
	// to no agent. Only rows where it differs from pSession name it.
	pBareSession principal = "session token without agent"
)

// principals is every kind of token the table checks, each row all of them.
var principals = []principal{pNone, pBad, pSession, pAgent, pViewer, pAdmin, pOwner, pAdminToken}

// slug is a short name of p for the names of the resources a row creates.
func (p principal) slug() string {
	return map[principal]string{pNone: "none", pBad: "bad", pSession: "sess", pAgent: "agent", pViewer: "viewer",
		pAdmin: "admin", pOwner: "owner", pAdminToken: "tok", pBareSession: "bare"}[p]
}

// want lists the expected status for each of principals, in order.
func want(none, bad, sess, agent, viewer, admin, owner, adminToken int) map[principal]int {
	return map[principal]int{pNone: none, pBad: bad, pSession: sess, pAgent: agent, pViewer: viewer, pAdmin: admin, pOwner: owner, pAdminToken: adminToken}
}

// readAll is the row of a GET every operator may make and no agent.
func readAll() map[principal]int { return want(401, 401, 403, 403, 200, 200, 200, 200) }

// permWorld is the server and the callers of the table.
type permWorld struct {
	s         *server
	tokens    map[principal]string
	passwords map[principal]string
	names     map[principal]string
	agent     apiwire.Agent   // ci-bot: services github, max 1h
	other     apiwire.Agent   // other-bot: services github
	agentSess apiwire.Session // minted by ci-bot: the pSession token
	bareSess  apiwire.Session // minted by the admin token: pBareSession
}

const operatorPassword = "operator-password-0123" // >= 12 characters

func newPermWorld(t *testing.T) *permWorld {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	drainHits(t, up)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	s.putService("stripe", passthrough("api.stripe.example"))
	w := &permWorld{s: s, tokens: map[principal]string{}, passwords: map[principal]string{}, names: map[principal]string{}}
	w.agent = s.createAgent("ci-bot", []string{"github"}, "1h")
	w.other = s.createAgent("other-bot", []string{"github"}, "")
	for p, role := range map[principal]string{pViewer: "viewer", pAdmin: "admin", pOwner: "owner"} {
		name := "perm-" + role
		s.createOperator(name, operatorPassword, role)
		w.names[p] = name
		w.passwords[p] = operatorPassword
		w.tokens[p] = s.login(name, operatorPassword).Token
	}
	w.agentSess = s.mintSession(bearer(w.agent.Token), apiwire.SessionRequest{Services: []string{"github"}, TTL: "30m"})
	if w.agentSess.Agent != "ci-bot" {
		t.Fatalf("a session minted with ci-bot's token names agent %q, want ci-bot", w.agentSess.Agent)
	}
	w.bareSess = s.mintSession(s.admin(), apiwire.SessionRequest{TTL: "30m"})
	w.tokens[pSession] = w.agentSess.Token
	w.tokens[pBareSession] = w.bareSess.Token
	w.tokens[pAgent] = w.agent.Token
	w.tokens[pAdminToken] = s.adminToken()
	w.tokens[pBad] = "avt_" + randomB64(32) // shaped like an agent token, unknown
	// Something for the lists to show: a session and a request of the
	// other agent, which ci-bot must not see.
	s.mintSession(bearer(w.other.Token), apiwire.SessionRequest{TTL: "30m"})
	s.must(bearer(w.other.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "other-bot-asks.example"}, http.StatusCreated, nil)
	s.must(bearer(w.agent.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Host: "ci-bot-asks.example"}, http.StatusCreated, nil)
	return w
}

func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// as is the cred of p.
func (w *permWorld) as(p principal) cred {
	if p == pNone {
		return cred{}
	}
	return bearer(w.tokens[p])
}

// permRow is one endpoint of the table.
type permRow struct {
	name   string // METHOD path, as the design's table writes it
	method string
	// path and body, or prep, which creates what the call acts on (for
	// each principal its own, so that one caller's success cannot turn
	// the next one's into a 404) and returns them.
	path string
	body any
	prep func(p principal) (path string, body any)
	// as, if set, is the credential of p for this row instead of the
	// shared one (a fresh login for logout).
	as     func(p principal) cred
	want   map[principal]int
	extra  map[principal]int    // principals beyond the eight, for this row only
	reason map[principal]string // a word the 403 body of p must hold
	// check, if set, looks at a successful answer.
	check func(t *testing.T, p principal, r apiResult)
	// kept, if set, checks after a refusal that the target is untouched.
	kept func(t *testing.T, p principal, path string)
}

func TestPermissionTable(t *testing.T) {
	w := newPermWorld(t)
	s := w.s
	adminTok := s.admin()
	agentTok := bearer(w.agent.Token)

	// Resources a row acts on, one per principal.
	credential := func(prefix string) func(p principal) (string, any) {
		return func(p principal) (string, any) {
			name := strings.ToUpper(prefix + "_" + p.slug())
			s.putCredential(name, "perm-value-"+p.slug())
			return "/api/v1/credentials/" + name, nil
		}
	}
	service := func(prefix string) func(p principal) (string, any) {
		return func(p principal) (string, any) {
			name := prefix + "-" + p.slug()
			s.putService(name, passthrough(name+".example"))
			return "/api/v1/services/" + name, nil
		}
	}
	agent := func(prefix string, body any) func(p principal) (string, any) {
		return func(p principal) (string, any) {
			name := prefix + "-" + p.slug()
			s.createAgent(name, []string{"github"}, "")
			return "/api/v1/agents/" + name, body
		}
	}
	operator := func(prefix string, body any) func(p principal) (string, any) {
		return func(p principal) (string, any) {
			name := prefix + "-" + p.slug()
			s.createOperator(name, operatorPassword, "viewer")
			return "/api/v1/operators/" + name, body
		}
	}
	// sessionOf mints a session of ci-bot (own) or of other-bot, leased or not.
	sessionOf := func(a apiwire.Agent, lease bool, suffix string) func(p principal) (string, any) {
		return func(p principal) (string, any) {
			se := s.mintSession(bearer(a.Token), apiwire.SessionRequest{TTL: "10m", Lease: lease})
			return "/api/v1/sessions/" + se.ID + suffix, nil
		}
	}
	// request has ci-bot ask for a fresh service, and returns the path
	// of its decision.
	request := func(prefix, verb string, body any) func(p principal) (string, any) {
		return func(p principal) (string, any) {
			name := prefix + "-" + p.slug()
			s.putService(name, passthrough(name+".example"))
			var req apiwire.AccessRequest
			s.must(agentTok, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: name}, http.StatusCreated, &req)
			return "/api/v1/requests/" + req.ID + "/" + verb, body
		}
	}
	credentialKept := func(t *testing.T, p principal, path string) {
		t.Helper()
		var l apiwire.CredentialList
		s.must(adminTok, "GET", "/api/v1/credentials", nil, 200, &l)
		name := path[strings.LastIndexByte(path, '/')+1:]
		if !slices.ContainsFunc(l.Credentials, func(c apiwire.Credential) bool { return c.Name == name }) {
			t.Errorf("%s: refused DELETE %s, yet credential %s is gone", p, path, name)
		}
	}
	statusOf := func(path string) int { return s.call(adminTok, "GET", path, nil).status }
	keptAt := func(t *testing.T, p principal, path string) {
		t.Helper()
		if got := statusOf(path); got != 200 {
			t.Errorf("%s: refused a change of %s, yet GET %s is %d", p, path, path, got)
		}
	}
	operatorKept := func(t *testing.T, p principal, path string) {
		t.Helper()
		var l apiwire.OperatorList
		s.must(adminTok, "GET", "/api/v1/operators", nil, 200, &l)
		name := path[strings.LastIndexByte(path, '/')+1:]
		if !slices.ContainsFunc(l.Operators, func(o apiwire.Operator) bool { return o.Name == name }) {
			t.Errorf("%s: refused DELETE %s, yet operator %s is gone", p, path, name)
		}
	}
	serviceKept := func(t *testing.T, p principal, path string) {
		t.Helper()
		var l apiwire.ServiceList
		s.must(adminTok, "GET", "/api/v1/services", nil, 200, &l)
		name := path[strings.LastIndexByte(path, '/')+1:]
		if !slices.ContainsFunc(l.Services, func(sv apiwire.Service) bool { return sv.Name == name }) {
			t.Errorf("%s: refused DELETE %s, yet service %s is gone", p, path, name)
		}
	}
	sessionKept := func(t *testing.T, p principal, path string) {
		t.Helper()
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/api/v1/sessions/"), "/renew")
		if se, ok := s.sessionInfo(id); !ok || se.Status != apiwire.SessionActive {
			t.Errorf("%s: refused DELETE %s, yet session %s is %q (listed %v)", p, path, id, se.Status, ok)
		}
	}
	ownAgentOnly := func(t *testing.T, p principal, r apiResult) {
		t.Helper()
		if p != pAgent && p != pSession {
			return
		}
		if strings.Contains(r.body, "other-bot") {
			t.Errorf("%s: the answer shows other-bot's items: %s", p, r.body)
		}
		if !strings.Contains(r.body, "ci-bot") {
			t.Errorf("%s: the answer shows none of ci-bot's own items: %s", p, r.body)
		}
	}
	noTokens := func(t *testing.T, p principal, r apiResult) {
		t.Helper()
		for _, tok := range []string{w.agent.Token, w.other.Token, w.agentSess.Token} {
			if strings.Contains(r.body, tok) {
				t.Errorf("%s: a list shows a token: %s", p, r.body)
			}
		}
		if strings.Contains(r.body, githubSecret) {
			t.Errorf("%s: a list shows a credential value", p)
		}
	}

	rows := []permRow{
		{name: "GET /healthz", method: "GET", path: "/healthz", want: want(200, 200, 200, 200, 200, 200, 200, 200)},
		{name: "GET /api/v1/ca.pem", method: "GET", path: "/api/v1/ca.pem", want: want(200, 200, 200, 200, 200, 200, 200, 200)},
		{name: "POST /api/v1/login (right password)", method: "POST", path: "/api/v1/login",
			body: apiwire.LoginRequest{Name: "perm-viewer", Password: operatorPassword}, want: map[principal]int{pNone: 200}},
		{name: "POST /api/v1/login (wrong password)", method: "POST", path: "/api/v1/login",
			body: apiwire.LoginRequest{Name: "perm-viewer", Password: "not-the-password-123"}, want: map[principal]int{pNone: 401}},
		{name: "POST /api/v1/logout", method: "POST", path: "/api/v1/logout",
			as: func(p principal) cred {
				if name, ok := w.names[p]; ok { // a login of its own: logout ends it
					return bearer(s.login(name, w.passwords[p]).Token)
				}
				return w.as(p)
			},
			want:   want(401, 401, 403, 403, 204, 204, 204, 204),
			reason: map[principal]string{pAgent: "agent", pSession: "session"}},
		{name: "GET /api/v1/session", method: "GET", path: "/api/v1/session",
			want:  want(401, 401, 200, 403, 403, 403, 403, 403),
			extra: map[principal]int{pBareSession: 200},
			check: func(t *testing.T, p principal, r apiResult) {
				var se apiwire.Session
				json.Unmarshal([]byte(r.body), &se)
				wantID := map[principal]string{pSession: w.agentSess.ID, pBareSession: w.bareSess.ID}[p]
				if se.ID != wantID || se.ProxyURL == "" || !strings.Contains(se.CAPEM, "BEGIN CERTIFICATE") {
					t.Errorf("%s: GET /api/v1/session = %s, want session %s with proxy_url and ca_pem", p, r.body, wantID)
				}
			}},
		{name: "GET /api/v1/credentials", method: "GET", path: "/api/v1/credentials", want: readAll(), check: noTokens,
			reason: map[principal]string{pAgent: "agent"}},
		{name: "GET /api/v1/stores", method: "GET", path: "/api/v1/stores", want: readAll()},
		{name: "GET /api/v1/services", method: "GET", path: "/api/v1/services", want: readAll()},
		{name: "GET /api/v1/agents", method: "GET", path: "/api/v1/agents", want: readAll(), check: noTokens},
		{name: "GET /api/v1/agents/{name}", method: "GET", path: "/api/v1/agents/ci-bot", want: readAll(), check: noTokens},
		{name: "GET /api/v1/operators", method: "GET", path: "/api/v1/operators", want: readAll(),
			check: func(t *testing.T, p principal, r apiResult) {
				if strings.Contains(r.body, operatorPassword) || strings.Contains(r.body, "argon2") {
					t.Errorf("%s: GET /api/v1/operators shows a password or its hash: %s", p, r.body)
				}
			}},
		{name: "GET /api/v1/audit", method: "GET", path: "/api/v1/audit", want: readAll(),
			reason: map[principal]string{pAgent: "audit", pSession: "audit"}},
		{name: "GET /api/v1/discovered", method: "GET", path: "/api/v1/discovered", want: readAll()},
		{name: "GET /api/v1/sessions", method: "GET", path: "/api/v1/sessions", want: want(401, 401, 403, 200, 200, 200, 200, 200),
			check: func(t *testing.T, p principal, r apiResult) {
				var l apiwire.SessionList
				json.Unmarshal([]byte(r.body), &l)
				if len(l.Sessions) == 0 {
					t.Errorf("%s: GET /api/v1/sessions lists nothing", p)
				}
				for _, se := range l.Sessions {
					if p == pAgent && se.Agent != "ci-bot" {
						t.Errorf("agent token: GET /api/v1/sessions shows session %s of agent %q", se.ID, se.Agent)
					}
				}
				noTokens(t, p, r)
			}},
		{name: "POST /api/v1/sessions", method: "POST", path: "/api/v1/sessions",
			body: apiwire.SessionRequest{Services: []string{"github"}, TTL: "10m"}, want: want(401, 401, 403, 201, 403, 201, 201, 201),
			reason: map[principal]string{pViewer: "admin"}},
		{name: "DELETE /api/v1/sessions/{id} (ci-bot's)", method: "DELETE", prep: sessionOf(w.agent, false, ""),
			want: want(401, 401, 403, 204, 403, 204, 204, 204), kept: sessionKept},
		{name: "DELETE /api/v1/sessions/{id} (other-bot's)", method: "DELETE", prep: sessionOf(w.other, false, ""),
			want: want(401, 401, 403, 404, 403, 204, 204, 204), kept: sessionKept},
		{name: "POST /api/v1/sessions/{id}/renew (ci-bot's)", method: "POST", prep: sessionOf(w.agent, true, "/renew"),
			want: want(401, 401, 403, 200, 403, 200, 200, 200),
			check: func(t *testing.T, p principal, r apiResult) {
				var lr apiwire.LeaseRenewal
				if json.Unmarshal([]byte(r.body), &lr) != nil || lr.ID == "" || lr.LeaseExpiresAt.IsZero() {
					t.Errorf("%s: renew answered %s, want {id, lease_expires_at}", p, r.body)
				}
			}},
		{name: "POST /api/v1/sessions/{id}/renew (other-bot's)", method: "POST", prep: sessionOf(w.other, true, "/renew"),
			want: want(401, 401, 403, 404, 403, 200, 200, 200)},
		{name: "PUT /api/v1/credentials/{name}", method: "PUT",
			prep: func(p principal) (string, any) {
				return "/api/v1/credentials/PERM_PUT_" + strings.ToUpper(p.slug()), map[string]string{"value": "perm-put-value"}
			},
			want:   want(401, 401, 403, 403, 403, 201, 201, 201),
			reason: map[principal]string{pViewer: "admin", pAgent: "agent"}},
		{name: "DELETE /api/v1/credentials/{name}", method: "DELETE", prep: credential("perm_del"),
			want: want(401, 401, 403, 403, 403, 204, 204, 204), kept: credentialKept,
			reason: map[principal]string{pViewer: "admin"}},
		{name: "PUT /api/v1/services/{name}", method: "PUT",
			prep: func(p principal) (string, any) {
				name := "perm-put-" + p.slug()
				return "/api/v1/services/" + name, passthrough(name + ".example")
			},
			want:   want(401, 401, 403, 403, 403, 200, 200, 200),
			reason: map[principal]string{pViewer: "admin", pAgent: "agent"}},
		{name: "DELETE /api/v1/services/{name}", method: "DELETE", prep: service("perm-del"),
			want: want(401, 401, 403, 403, 403, 204, 204, 204), kept: serviceKept},
		{name: "POST /api/v1/agents", method: "POST",
			prep: func(p principal) (string, any) {
				return "/api/v1/agents", apiwire.AgentCreateRequest{Name: "perm-new-" + p.slug(), Services: []string{"github"}}
			},
			want:   want(401, 401, 403, 403, 403, 201, 201, 201),
			reason: map[principal]string{pViewer: "admin", pAgent: "agent"}},
		{name: "PATCH /api/v1/agents/{name}", method: "PATCH", prep: agent("perm-patch", map[string]string{"max_session_ttl": "30m"}),
			want: want(401, 401, 403, 403, 403, 200, 200, 200)},
		{name: "DELETE /api/v1/agents/{name}", method: "DELETE", prep: agent("perm-del", nil),
			want: want(401, 401, 403, 403, 403, 204, 204, 204), kept: keptAt},
		{name: "POST /api/v1/agents/{name}/rotate", method: "POST",
			prep: func(p principal) (string, any) {
				path, _ := agent("perm-rot", nil)(p)
				return path + "/rotate", nil
			},
			want: want(401, 401, 403, 403, 403, 200, 200, 200),
			check: func(t *testing.T, p principal, r apiResult) {
				var a apiwire.Agent
				if json.Unmarshal([]byte(r.body), &a) != nil || !strings.HasPrefix(a.Token, "avt_") {
					t.Errorf("%s: rotate answered %s, want the agent with its new token", p, r.body)
				}
			}},
		{name: "POST /api/v1/operators", method: "POST",
			prep: func(p principal) (string, any) {
				return "/api/v1/operators", apiwire.OperatorCreateRequest{Name: "perm-op-" + p.slug(), Password: operatorPassword, Role: "viewer"}
			},
			want:   want(401, 401, 403, 403, 403, 403, 201, 201),
			reason: map[principal]string{pAdmin: "owner", pViewer: "owner"}},
		{name: "PATCH /api/v1/operators/{name}", method: "PATCH", prep: operator("perm-op-patch", map[string]string{"role": "admin"}),
			want: want(401, 401, 403, 403, 403, 403, 200, 200), reason: map[principal]string{pAdmin: "owner"}},
		{name: "DELETE /api/v1/operators/{name}", method: "DELETE", prep: operator("perm-op-del", nil),
			want: want(401, 401, 403, 403, 403, 403, 204, 204), kept: operatorKept},
		{name: "POST /api/v1/requests", method: "POST",
			prep: func(p principal) (string, any) {
				return "/api/v1/requests", apiwire.AccessRequestCreate{Host: "perm-ask-" + p.slug() + ".example"}
			},
			want:  want(401, 401, 201, 201, 403, 403, 403, 403),
			extra: map[principal]int{pBareSession: 403},
			check: func(t *testing.T, p principal, r apiResult) {
				var req apiwire.AccessRequest
				json.Unmarshal([]byte(r.body), &req)
				if req.Agent != "ci-bot" || req.Status != apiwire.RequestPending || !strings.HasPrefix(req.ID, "req_") {
					t.Errorf("%s: POST /api/v1/requests = %s, want a pending req_ request of ci-bot", p, r.body)
				}
				if p == pSession && req.Session != w.agentSess.ID {
					t.Errorf("session token: the request names session %q, want %s", req.Session, w.agentSess.ID)
				}
			},
			reason: map[principal]string{pBareSession: "agent"}},
		{name: "GET /api/v1/requests", method: "GET", path: "/api/v1/requests", want: want(401, 401, 200, 200, 200, 200, 200, 200),
			check: func(t *testing.T, p principal, r apiResult) {
				ownAgentOnly(t, p, r)
				if p != pAgent && p != pSession && !strings.Contains(r.body, "other-bot") {
					t.Errorf("%s: GET /api/v1/requests does not show other-bot's request: %s", p, r.body)
				}
			}},
		{name: "POST /api/v1/requests/{id}/approve", method: "POST", prep: request("perm-appr", "approve", nil),
			want: want(401, 401, 403, 403, 403, 200, 200, 200), reason: map[principal]string{pViewer: "admin"},
			check: func(t *testing.T, p principal, r apiResult) {
				var req apiwire.AccessRequest
				if json.Unmarshal([]byte(r.body), &req) != nil || req.Status != apiwire.RequestApproved {
					t.Errorf("%s: approve answered %s, want the request, approved", p, r.body)
				}
			}},
		{name: "POST /api/v1/requests/{id}/deny", method: "POST", prep: request("perm-deny", "deny", apiwire.AccessRequestDeny{Reason: "table test"}),
			want: want(401, 401, 403, 403, 403, 200, 200, 200),
			check: func(t *testing.T, p principal, r apiResult) {
				var req apiwire.AccessRequest
				if json.Unmarshal([]byte(r.body), &req) != nil || req.Status != apiwire.RequestDenied || req.DecisionReason != "table test" {
					t.Errorf("%s: deny answered %s, want the request, denied, with the reason", p, r.body)
				}
			}},
	}

	// The table is complete: every route the issue names has a row.
	var table strings.Builder
	for _, row := range rows {
		login := strings.HasPrefix(row.name, "POST /api/v1/login")
		if len(row.want) != len(principals) && !login {
			t.Errorf("row %s does not cover every kind of token", row.name)
		}
		callers := append([]principal(nil), principals...)
		for p := range row.extra {
			callers = append(callers, p)
		}
		fmt.Fprintf(&table, "%-48s", row.name)
		for _, p := range callers {
			wantStatus, ok := row.want[p]
			if !ok {
				if wantStatus, ok = row.extra[p]; !ok {
					continue
				}
			}
			path, body := row.path, row.body
			if row.prep != nil {
				path, body = row.prep(p)
			}
			c := w.as(p)
			if row.as != nil {
				c = row.as(p)
			}
			r := s.call(c, row.method, path, body)
			fmt.Fprintf(&table, " %s=%d", p.slug(), r.status)
			if r.status != wantStatus {
				t.Errorf("%s %s as %s: %s, want %d", row.method, path, p, r, wantStatus)
				continue
			}
			switch {
			case r.status == 401 && !login && r.header.Get("WWW-Authenticate") == "":
				t.Errorf("%s %s as %s: 401 without WWW-Authenticate", row.method, path, p)
			case r.status == 403:
				// Every refusal says what was refused and why.
				msg := r.errText()
				if msg == r.body || len(msg) < 20 {
					t.Errorf("%s %s as %s: 403 body %q is not an {\"error\": reason} that says why", row.method, path, p, r.body)
				}
				if word := row.reason[p]; word != "" && !strings.Contains(msg, word) {
					t.Errorf("%s %s as %s: 403 %q does not mention %q", row.method, path, p, msg, word)
				}
				if row.kept != nil {
					row.kept(t, p, path)
				}
			case r.status >= 400:
				if row.kept != nil {
					row.kept(t, p, path)
				}
			case r.status < 300 && row.check != nil:
				row.check(t, p, r)
			}
		}
		table.WriteString("\n")
	}
	t.Logf("statuses:\n%s", table.String())

	// The logout of the admin token is a no-op: it still works.
	s.must(adminTok, "GET", "/api/v1/services", nil, 200, nil)
	// Other shapes of unknown tokens are 401 too, never 403 or 500.
	for _, tok := range []string{"avo_" + randomB64(32), "avs_" + randomB64(32), "ava_" + strings.Repeat("0", 64), "x"} {
		if r := s.call(bearer(tok), "GET", "/api/v1/services", nil); r.status != 401 {
			t.Errorf("GET /api/v1/services with unknown token %.6s...: %s, want 401", tok, r)
		}
	}
	// An expired or revoked session token is unknown (401), not a session.
	s.must(adminTok, "DELETE", "/api/v1/sessions/"+w.bareSess.ID, nil, http.StatusNoContent, nil)
	if r := s.call(bearer(w.bareSess.Token), "GET", "/api/v1/session", nil); r.status != 401 {
		t.Errorf("GET /api/v1/session with a revoked session's token: %s, want 401", r)
	}
}

// TestAgentTokenLimits: what an agent token may not do, and that each
// refusal says why.
func TestAgentTokenLimits(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	drainHits(t, up)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", bearerService(up.hostPort(), "GITHUB_TOKEN"))
	s.putService("stripe", passthrough("api.stripe.example"))
	a := s.createAgent("ci-bot", []string{"github"}, "1h")
	agent := bearer(a.Token)

	for _, c := range []struct {
		what         string
		method, path string
		body         any
		want         int
		words        []string
	}{
		{"mint out of scope", "POST", "/api/v1/sessions", apiwire.SessionRequest{Services: []string{"stripe"}, TTL: "10m"}, 403, []string{"ci-bot", "stripe", "/api/v1/requests"}},
		{"mint in and out of scope", "POST", "/api/v1/sessions", apiwire.SessionRequest{Services: []string{"github", "stripe"}, TTL: "10m"}, 403, []string{"stripe"}},
		{"mint above its max TTL", "POST", "/api/v1/sessions", apiwire.SessionRequest{Services: []string{"github"}, TTL: "2h"}, 403, []string{"2h", "1h", "max_session_ttl"}},
		// Allowed is checked before existence: an agent does not learn
		// which services exist beyond its own.
		{"mint an unknown service", "POST", "/api/v1/sessions", apiwire.SessionRequest{Services: []string{"nosuch"}, TTL: "10m"}, 403, []string{"nosuch"}},
		{"mint an empty list", "POST", "/api/v1/sessions", map[string]any{"services": []string{}, "ttl": "10m"}, 400, []string{"services"}},
		{"define a service", "PUT", "/api/v1/services/evil", bearerService("evil.example", "GITHUB_TOKEN"), 403, []string{"agent"}},
		{"read the audit log", "GET", "/api/v1/audit", nil, 403, []string{"audit"}},
		{"list credentials", "GET", "/api/v1/credentials", nil, 403, []string{"credentials"}},
		{"put a credential", "PUT", "/api/v1/credentials/GITHUB_TOKEN", map[string]string{"value": "stolen"}, 403, []string{"agent"}},
		{"widen itself", "PATCH", "/api/v1/agents/ci-bot", map[string]any{"services": []string{"*"}}, 403, []string{"agent"}},
		{"rotate itself", "POST", "/api/v1/agents/ci-bot/rotate", nil, 403, []string{"agent"}},
		{"create an agent", "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: "sneaky", Services: []string{"*"}}, 403, []string{"agent"}},
		{"decide a request", "POST", "/api/v1/requests/req_000000000000000000000000/approve", nil, 403, []string{"agent"}},
	} {
		r := s.call(agent, c.method, c.path, c.body)
		if r.status != c.want {
			t.Errorf("agent token may not %s: %s %s = %s, want %d", c.what, c.method, c.path, r, c.want)
			continue
		}
		for _, word := range c.words {
			if !strings.Contains(r.errText(), word) {
				t.Errorf("agent token may not %s: %d %q does not say %q", c.what, r.status, r.errText(), word)
			}
		}
	}
	// None of those left a trace: no service evil, GITHUB_TOKEN's value
	// unchanged (the upstream still gets it), ci-bot still limited.
	if r := s.call(s.admin(), "GET", "/api/v1/services", nil); strings.Contains(r.body, `"evil"`) {
		t.Error("an agent token defined a service")
	}
	var got apiwire.Agent
	s.must(s.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &got)
	if !slices.Equal(got.Services, []string{"github"}) {
		t.Errorf("ci-bot's services are %v after its refused PATCH, want [github]", got.Services)
	}
	sess := s.mintSession(agent, apiwire.SessionRequest{TTL: "10m"})
	if !injected(asSession(sess).agentClient(t), up, githubSecret) {
		t.Error("after the refused PUT, the upstream does not get GITHUB_TOKEN's original value")
	}
	// Within its limits it works, and "services" omitted means what it
	// is allowed, never every service.
	if !slices.Equal(sess.Services, []string{"github"}) {
		t.Errorf("a session ci-bot mints without services has %v, want [github]", sess.Services)
	}
	if sess.Agent != "ci-bot" {
		t.Errorf("the session names agent %q, want ci-bot", sess.Agent)
	}
	full := s.mintSession(agent, apiwire.SessionRequest{Services: []string{"github"}, TTL: "1h"})
	if d := time.Until(full.ExpiresAt); d > time.Hour+time.Minute || d < 55*time.Minute {
		t.Errorf("a 1h session expires in %v", d)
	}
	// No TTL: the server's default, capped at the agent's max.
	def := s.mintSession(agent, apiwire.SessionRequest{})
	if d := time.Until(def.ExpiresAt); d > time.Hour+time.Minute {
		t.Errorf("a session ci-bot mints without ttl expires in %v, beyond its max_session_ttl 1h", d)
	}
	// The agent's CA is public.
	if r := s.call(agent, "GET", "/api/v1/ca.pem", nil); r.status != 200 || !strings.Contains(r.body, "BEGIN CERTIFICATE") {
		t.Errorf("GET /api/v1/ca.pem with an agent token: %s", r)
	}
}
