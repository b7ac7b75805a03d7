package e2etest

// Issue 10, access requests: an agent asks for a service it lacks and
// for a host nothing covers (with its agent token and with its session's
// proxy token, following what the proxy's 403 tells it), operators list,
// approve and deny, and the next session the agent mints includes what
// was approved.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

const (
	stripeSecret = "sk_live_stripeSecretValue0123456789"
	newSecret    = "new_service_secret_value_0123456789"
)

var requestID = regexp.MustCompile(`^req_[0-9a-f]{24}$`)

// askFromRefusal extracts the JSON body the proxy's 403 tells the agent
// to POST to /api/v1/requests.
func askFromRefusal(t *testing.T, refusal string) apiwire.AccessRequestCreate {
	t.Helper()
	i := strings.Index(refusal, "/api/v1/requests")
	if i < 0 {
		t.Fatalf("the proxy's 403 does not say how to ask for access (no /api/v1/requests): %q", refusal)
	}
	rest := refusal[i:]
	j, k := strings.IndexByte(rest, '{'), strings.IndexByte(rest, '}')
	if j < 0 || k < j {
		t.Fatalf("the proxy's 403 names no request body: %q", refusal)
	}
	var ask apiwire.AccessRequestCreate
	if err := json.Unmarshal([]byte(rest[j:k+1]), &ask); err != nil || ask.Host == "" {
		t.Fatalf("the proxy's 403 names request body %q: %v", rest[j:k+1], err)
	}
	return ask
}

func TestAccessRequestJourney(t *testing.T) {
	ca := newTestCA(t)
	gh, st, nw := newUpstream(t, ca, true), newUpstream(t, ca, true), newUpstream(t, ca, true)
	for _, u := range []*upstream{gh, st, nw} {
		drainHits(t, u)
	}
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putCredential("STRIPE_TOKEN", stripeSecret)
	s.putCredential("NEW_TOKEN", newSecret)
	s.putService("github", bearerService(gh.hostPort(), "GITHUB_TOKEN"))
	s.putService("stripe", bearerService(st.hostPort(), "STRIPE_TOKEN"))
	s.putService("pager", passthrough("pager.example"))
	bot := s.createAgent("ci-bot", []string{"github"}, "")
	agent := bearer(bot.Token)
	s.createOperator("vera", operatorPassword, "viewer")
	s.createOperator("adam", operatorPassword, "admin")
	viewer := bearer(s.login("vera", operatorPassword).Token)
	admin := bearer(s.login("adam", operatorPassword).Token)

	// 1. With its agent token, for an existing service it lacks.
	var svcReq apiwire.AccessRequest
	s.must(agent, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe", Reason: "monthly billing report"}, http.StatusCreated, &svcReq)
	if !requestID.MatchString(svcReq.ID) || svcReq.Agent != "ci-bot" || svcReq.Service != "stripe" || svcReq.Status != apiwire.RequestPending ||
		svcReq.Reason != "monthly billing report" || svcReq.CreatedAt.IsZero() || svcReq.DecidedAt != nil {
		t.Fatalf("POST /api/v1/requests {service: stripe} = %+v", svcReq)
	}
	var dup apiwire.AccessRequest
	s.must(agent, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "stripe"}, http.StatusOK, &dup)
	if dup.ID != svcReq.ID {
		t.Errorf("asking again while pending made request %s, want the pending %s back", dup.ID, svcReq.ID)
	}
	for _, c := range []struct {
		body  any
		want  int
		words string
	}{
		{apiwire.AccessRequestCreate{Service: "github"}, 409, "already allowed"},
		{apiwire.AccessRequestCreate{Service: "nosuch"}, 400, "nosuch"},
		{apiwire.AccessRequestCreate{}, 400, "service"},
		{apiwire.AccessRequestCreate{Service: "stripe", Host: "api.stripe.example"}, 400, "host"},
		{apiwire.AccessRequestCreate{Host: "not a host!"}, 400, "host"},
		{apiwire.AccessRequestCreate{Host: "reason.example", Reason: strings.Repeat("x", 501)}, 400, "reason"},
		{apiwire.AccessRequestCreate{Host: "reason.example", Reason: "line\nbreak\x1b[31m"}, 400, "reason"},
	} {
		if r := s.call(agent, "POST", "/api/v1/requests", c.body); r.status != c.want || !strings.Contains(r.errText(), c.words) {
			t.Errorf("POST /api/v1/requests %+v = %s, want %d saying %q", c.body, r, c.want, c.words)
		}
	}

	// 2. With its session's proxy token, for a host nothing covers,
	// doing what the proxy's refusal says.
	old := s.mintSession(agent, apiwire.SessionRequest{TTL: "10m"})
	code, _, refusal := askRefused(t, s, nw.hostPort(), old.Token)
	if code != http.StatusForbidden {
		t.Fatalf("GET from an uncovered host: %d %q, want 403", code, refusal)
	}
	ask := askFromRefusal(t, refusal)
	mustContain(t, "the proxy's 403", refusal, "session token")
	ask.Reason = "needs the new API"
	var hostReq apiwire.AccessRequest
	s.must(bearer(old.Token), "POST", "/api/v1/requests", ask, http.StatusCreated, &hostReq)
	if hostReq.Agent != "ci-bot" || hostReq.Session != old.ID || hostReq.Host == "" || hostReq.Status != apiwire.RequestPending {
		t.Fatalf("the request made with the session token: %+v", hostReq)
	}
	if nw.count() != 0 {
		t.Fatal("the uncovered host was contacted")
	}

	// 3. Operators see both pending; the agent sees its own.
	var pending apiwire.AccessRequestList
	s.must(viewer, "GET", "/api/v1/requests?status=pending", nil, 200, &pending)
	for _, id := range []string{svcReq.ID, hostReq.ID} {
		if !slices.ContainsFunc(pending.Requests, func(r apiwire.AccessRequest) bool { return r.ID == id && r.Status == apiwire.RequestPending }) {
			t.Errorf("GET /api/v1/requests?status=pending does not list %s: %+v", id, pending)
		}
	}
	for _, r := range pending.Requests {
		if r.Status != apiwire.RequestPending {
			t.Errorf("?status=pending lists a %s request", r.Status)
		}
	}
	if r := s.call(viewer, "POST", "/api/v1/requests/"+svcReq.ID+"/approve", nil); r.status != 403 {
		t.Errorf("a viewer approves: %s, want 403", r)
	}

	// 4. An admin approves the service request: stripe joins ci-bot's set.
	var approved apiwire.AccessRequest
	s.must(admin, "POST", "/api/v1/requests/"+svcReq.ID+"/approve", nil, 200, &approved)
	if approved.Status != apiwire.RequestApproved || approved.DecidedBy != "adam" || approved.DecidedAt == nil {
		t.Errorf("approved: %+v, want approved by adam with decided_at", approved)
	}
	var got apiwire.Agent
	s.must(s.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &got)
	if !slices.Contains(got.Services, "stripe") || !slices.Contains(got.Services, "github") {
		t.Errorf("ci-bot's services after the approval: %v, want github and stripe", got.Services)
	}
	if r := s.call(admin, "POST", "/api/v1/requests/"+svcReq.ID+"/approve", nil); r.status != 409 {
		t.Errorf("approving a decided request: %s, want 409", r)
	}
	if r := s.call(admin, "POST", "/api/v1/requests/req_000000000000000000000000/approve", nil); r.status != 404 {
		t.Errorf("approving an unknown request: %s, want 404", r)
	}

	// 5. The host request needs a service definition: without one (none
	// covers the host) it is refused and stays pending; with one, the
	// service is created and granted.
	if r := s.call(admin, "POST", "/api/v1/requests/"+hostReq.ID+"/approve", nil); r.status != 400 || !strings.Contains(r.errText(), "service") {
		t.Errorf("approving a host request without a service: %s, want 400 asking for one", r)
	}
	bad := services.Service{Name: "newsvc", Host: nw.hostPort(), Auth: services.Auth{Type: "bearer"}} // no token: invalid
	if r := s.call(admin, "POST", "/api/v1/requests/"+hostReq.ID+"/approve", apiwire.AccessRequestApprove{Service: &bad}); r.status != 400 {
		t.Errorf("approving with an invalid service: %s, want 400", r)
	}
	if r := s.call(s.admin(), "GET", "/api/v1/services", nil); strings.Contains(r.body, `"newsvc"`) {
		t.Error("an invalid service of a refused approval was stored")
	}
	svc := services.Service{Name: "newsvc", Host: nw.hostPort(), Auth: services.Auth{Type: "bearer", Token: "NEW_TOKEN"}}
	s.must(admin, "POST", "/api/v1/requests/"+hostReq.ID+"/approve", apiwire.AccessRequestApprove{Service: &svc}, 200, &approved)
	if approved.Status != apiwire.RequestApproved {
		t.Errorf("host request after approval: %+v", approved)
	}
	var list apiwire.ServiceList
	s.must(s.admin(), "GET", "/api/v1/services", nil, 200, &list)
	if !slices.ContainsFunc(list.Services, func(x apiwire.Service) bool { return x.Name == "newsvc" && x.Host == nw.hostPort() }) {
		t.Errorf("the approved service is not defined: %+v", list)
	}
	s.must(s.admin(), "GET", "/api/v1/agents/ci-bot", nil, 200, &got)
	if !slices.Contains(got.Services, "newsvc") {
		t.Errorf("ci-bot's services after the host approval: %v, want newsvc in them", got.Services)
	}

	// 6. The session minted before keeps its scope; a new one includes both.
	if code, _, _ := askRefused(t, s, st.hostPort(), old.Token); code != http.StatusForbidden {
		t.Errorf("the session minted before the approval reaches stripe: %d, want 403", code)
	}
	fresh := s.mintSession(agent, apiwire.SessionRequest{TTL: "10m"})
	for _, name := range []string{"github", "stripe", "newsvc"} {
		if !slices.Contains(fresh.Services, name) {
			t.Errorf("the new session's services %v lack %s", fresh.Services, name)
		}
	}
	c := asSession(fresh).agentClient(t)
	if !injected(c, st, stripeSecret) {
		t.Error("through the new session, stripe's upstream does not get STRIPE_TOKEN")
	}
	if !injected(c, nw, newSecret) {
		t.Error("through the new session, the approved host does not get NEW_TOKEN")
	}

	// 7. Deny with a reason: the agent sees why; nothing is granted.
	var denyReq, denied apiwire.AccessRequest
	s.must(agent, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "pager"}, http.StatusCreated, &denyReq)
	s.must(admin, "POST", "/api/v1/requests/"+denyReq.ID+"/deny", apiwire.AccessRequestDeny{Reason: "CI never pages anyone"}, 200, &denied)
	if denied.Status != apiwire.RequestDenied || denied.DecisionReason != "CI never pages anyone" || denied.DecidedBy != "adam" {
		t.Errorf("denied: %+v", denied)
	}
	var mine apiwire.AccessRequestList
	s.must(agent, "GET", "/api/v1/requests", nil, 200, &mine)
	i := slices.IndexFunc(mine.Requests, func(r apiwire.AccessRequest) bool { return r.ID == denyReq.ID })
	if i < 0 || mine.Requests[i].DecisionReason != "CI never pages anyone" {
		t.Errorf("the agent's own list does not show the denial's reason: %+v", mine)
	}
	var deniedList apiwire.AccessRequestList
	s.must(viewer, "GET", "/api/v1/requests?"+url.Values{"status": {"denied"}}.Encode(), nil, 200, &deniedList)
	if len(deniedList.Requests) != 1 || deniedList.Requests[0].ID != denyReq.ID {
		t.Errorf("?status=denied: %+v, want only %s", deniedList, denyReq.ID)
	}
	if r := s.call(admin, "POST", "/api/v1/requests/"+denyReq.ID+"/approve", nil); r.status != 409 {
		t.Errorf("approving a denied request: %s, want 409", r)
	}
	if r := s.call(agent, "POST", "/api/v1/sessions", apiwire.SessionRequest{Services: []string{"pager"}, TTL: "10m"}); r.status != 403 {
		t.Errorf("minting the denied service: %s, want 403", r)
	}
	if slices.Contains(s.mintSession(agent, apiwire.SessionRequest{TTL: "10m"}).Services, "pager") {
		t.Error("a session after the denial includes pager")
	}
	// Asking again after a denial is a new request.
	var again apiwire.AccessRequest
	s.must(agent, "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "pager", Reason: "please"}, http.StatusCreated, &again)
	if again.ID == denyReq.ID || again.Status != apiwire.RequestPending {
		t.Errorf("asking again after a denial: %+v", again)
	}

	// 8. An agent allowed every service has nothing to ask for.
	all := s.createAgent("all-bot", []string{apiwire.AllServices}, "")
	if r := s.call(bearer(all.Token), "POST", "/api/v1/requests", apiwire.AccessRequestCreate{Service: "pager"}); r.status != 409 {
		t.Errorf("an agent with [*] asks for a service: %s, want 409 already allowed", r)
	}
}
