package apiclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// Every endpoint method of services.go, agents.go, operators.go,
// requests.go, audit.go and activity.go (its list; the stream has
// activity_test.go): the method, path, query and body it sends, and
// that it decodes the answer.
func TestEndpointMethods(t *testing.T) {
	ctx := context.Background()
	ttl := "30m"
	role := "admin"
	svc := apiwire.Service{Name: "github", Host: "api.github.com", Auth: services.Auth{Type: "bearer", Token: "GITHUB_TOKEN"}}
	cases := []struct {
		name                string
		call                func(c *Client) (any, error)
		status              int
		answer              string
		method, path, query string
		body                string // "" for none
		check               func(t *testing.T, got any)
	}{
		{name: "Services", call: func(c *Client) (any, error) { return c.Services(ctx) },
			status: 200, answer: `{"services":null}`, method: "GET", path: "/api/v1/services",
			check: func(t *testing.T, got any) {
				if l := got.([]apiwire.Service); l == nil || len(l) != 0 {
					t.Errorf("got %#v, want an empty non-nil list", l)
				}
			}},
		{name: "PutService", call: func(c *Client) (any, error) { return c.PutService(ctx, svc) },
			status: 200, answer: `{"name":"github","host":"api.github.com","auth":{"type":"bearer","token":"GITHUB_TOKEN"},"warnings":["w"]}`,
			method: "PUT", path: "/api/v1/services/github", body: `{"name":"github","host":"api.github.com","auth":{"type":"bearer","token":"GITHUB_TOKEN"}}`,
			check: func(t *testing.T, got any) {
				if r := got.(*apiwire.ServicePutResponse); r.Name != "github" || len(r.Warnings) != 1 {
					t.Errorf("got %+v", r)
				}
			}},
		{name: "DeleteService", call: func(c *Client) (any, error) { return nil, c.DeleteService(ctx, "github") },
			status: 204, method: "DELETE", path: "/api/v1/services/github"},
		{name: "Agents", call: func(c *Client) (any, error) { return c.Agents(ctx) },
			status: 200, answer: `{"agents":[{"name":"a","services":["*"],"max_session_ttl":"1h"}]}`, method: "GET", path: "/api/v1/agents",
			check: func(t *testing.T, got any) {
				if l := got.([]apiwire.Agent); len(l) != 1 || l[0].Name != "a" {
					t.Errorf("got %+v", l)
				}
			}},
		{name: "Agent", call: func(c *Client) (any, error) { return c.Agent(ctx, "a") },
			status: 200, answer: `{"name":"a"}`, method: "GET", path: "/api/v1/agents/a"},
		{name: "CreateAgent", call: func(c *Client) (any, error) {
			return c.CreateAgent(ctx, apiwire.AgentCreateRequest{Name: "ci", Services: []string{"github"}, MaxSessionTTL: "1h"})
		}, status: 201, answer: `{"name":"ci","token":"avt_x"}`, method: "POST", path: "/api/v1/agents",
			body: `{"name":"ci","services":["github"],"max_session_ttl":"1h"}`,
			check: func(t *testing.T, got any) {
				if a := got.(*apiwire.Agent); a.Token != "avt_x" {
					t.Errorf("got %+v", a)
				}
			}},
		{name: "UpdateAgent", call: func(c *Client) (any, error) {
			return c.UpdateAgent(ctx, "ci", apiwire.AgentPatchRequest{MaxSessionTTL: &ttl})
		}, status: 200, answer: `{"name":"ci","revoked_sessions":["s1"]}`, method: "PATCH", path: "/api/v1/agents/ci",
			body: `{"max_session_ttl":"30m"}`},
		{name: "RotateAgent", call: func(c *Client) (any, error) { return c.RotateAgent(ctx, "ci") },
			status: 200, answer: `{"name":"ci","token":"avt_y"}`, method: "POST", path: "/api/v1/agents/ci/rotate"},
		{name: "DeleteAgent", call: func(c *Client) (any, error) { return nil, c.DeleteAgent(ctx, "ci") },
			status: 204, method: "DELETE", path: "/api/v1/agents/ci"},
		{name: "Operators", call: func(c *Client) (any, error) { return c.Operators(ctx) },
			status: 200, answer: `{"operators":[]}`, method: "GET", path: "/api/v1/operators"},
		{name: "CreateOperator", call: func(c *Client) (any, error) {
			return c.CreateOperator(ctx, apiwire.OperatorCreateRequest{Name: "alice", Password: "correct horse battery", Role: "viewer"})
		}, status: 201, answer: `{"name":"alice","role":"viewer"}`, method: "POST", path: "/api/v1/operators",
			body: `{"name":"alice","password":"correct horse battery","role":"viewer"}`},
		{name: "UpdateOperator", call: func(c *Client) (any, error) {
			return c.UpdateOperator(ctx, "alice", apiwire.OperatorPatchRequest{Role: &role})
		}, status: 200, answer: `{"name":"alice","role":"admin"}`, method: "PATCH", path: "/api/v1/operators/alice", body: `{"role":"admin"}`},
		{name: "DeleteOperator", call: func(c *Client) (any, error) { return nil, c.DeleteOperator(ctx, "alice") },
			status: 204, method: "DELETE", path: "/api/v1/operators/alice"},
		{name: "AccessRequests", call: func(c *Client) (any, error) { return c.AccessRequests(ctx, "pending") },
			status: 200, answer: `{"requests":null}`, method: "GET", path: "/api/v1/requests", query: "status=pending",
			check: func(t *testing.T, got any) {
				if l := got.([]apiwire.AccessRequest); l == nil {
					t.Error("nil list")
				}
			}},
		{name: "AccessRequestsAll", call: func(c *Client) (any, error) { return c.AccessRequests(ctx, "") },
			status: 200, answer: `{"requests":[]}`, method: "GET", path: "/api/v1/requests"},
		{name: "CreateAccessRequest", call: func(c *Client) (any, error) {
			return c.CreateAccessRequest(ctx, apiwire.AccessRequestCreate{Host: "api.stripe.com", Reason: "billing"})
		}, status: 201, answer: `{"id":"req_1","status":"pending"}`, method: "POST", path: "/api/v1/requests",
			body: `{"host":"api.stripe.com","reason":"billing"}`},
		{name: "ApproveAccessRequest", call: func(c *Client) (any, error) {
			return c.ApproveAccessRequest(ctx, "req_1", apiwire.AccessRequestApprove{Service: &svc})
		}, status: 200, answer: `{"id":"req_1","status":"approved"}`, method: "POST", path: "/api/v1/requests/req_1/approve",
			body: `{"service":{"name":"github","host":"api.github.com","auth":{"type":"bearer","token":"GITHUB_TOKEN"}}}`},
		{name: "DenyAccessRequest", call: func(c *Client) (any, error) {
			return c.DenyAccessRequest(ctx, "req_1", apiwire.AccessRequestDeny{Reason: "no"})
		}, status: 200, answer: `{"id":"req_1","status":"denied"}`, method: "POST", path: "/api/v1/requests/req_1/deny", body: `{"reason":"no"}`},
		{name: "Audit", call: func(c *Client) (any, error) {
			return c.Audit(ctx, AuditQuery{Actor: "alice", Action: "agent.create", Limit: 5, Before: "123_x"})
		}, status: 200, answer: `{"entries":null,"next_before":"9_y"}`, method: "GET", path: "/api/v1/audit",
			query: "action=agent.create&actor=alice&before=123_x&limit=5",
			check: func(t *testing.T, got any) {
				if l := got.(*apiwire.AuditList); l.Entries == nil || l.NextBefore != "9_y" {
					t.Errorf("got %+v", l)
				}
			}},
		{name: "Activity", call: func(c *Client) (any, error) {
			return c.Activity(ctx, ActivityQuery{Session: "s1", Agent: "ci", Service: "github", Host: "api.github.com",
				Decision: "refused", Code: "uncovered_host", Status: 403, Since: "1h", Limit: 5, Before: "9_y"})
		}, status: 200, answer: `{"entries":null,"next_before":"8_x"}`, method: "GET", path: "/api/v1/activity",
			query: "agent=ci&before=9_y&code=uncovered_host&decision=refused&host=api.github.com&limit=5&service=github&session=s1&since=1h&status=403",
			check: func(t *testing.T, got any) {
				if l := got.(*apiwire.ActivityList); l.Entries == nil || l.NextBefore != "8_x" {
					t.Errorf("got %+v", l)
				}
			}},
		{name: "ActivityUnfiltered", call: func(c *Client) (any, error) { return c.Activity(ctx, ActivityQuery{}) },
			status: 200, answer: `{"entries":[{"id":"a1","decision":"forwarded"}]}`, method: "GET", path: "/api/v1/activity",
			check: func(t *testing.T, got any) {
				if l := got.(*apiwire.ActivityList); len(l.Entries) != 1 || l.Entries[0].ID != "a1" {
					t.Errorf("got %+v", l)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var query string
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				query = r.URL.RawQuery
				if tc.answer == "" {
					w.WriteHeader(tc.status)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.answer)
			})
			got, err := tc.call(f.client(t))
			if err != nil {
				t.Fatal(err)
			}
			req := f.requests()[0]
			if req.method != tc.method || req.path != tc.path || query != tc.query {
				t.Errorf("sent %s %s?%s, want %s %s?%s", req.method, req.path, query, tc.method, tc.path, tc.query)
			}
			if req.auth != "Bearer "+testToken {
				t.Errorf("Authorization = %q", req.auth)
			}
			if tc.body == "" && len(req.body) != 0 {
				t.Errorf("sent body %s, want none", req.body)
			}
			if tc.body != "" && !jsonEqual(t, req.body, tc.body) {
				t.Errorf("sent body %s, want %s", req.body, tc.body)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

// Refusals come back as *Error with the server's words; an id that
// cannot be a path segment is refused before any I/O.
func TestEndpointErrors(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusForbidden, apiwire.Error{Error: "role viewer may not POST /api/v1/agents: needs admin"})
	})
	c := f.client(t)
	_, err := c.CreateAgent(context.Background(), apiwire.AgentCreateRequest{Name: "x", Services: []string{"*"}})
	if StatusOf(err) != 403 || err.(*Error).Message != "role viewer may not POST /api/v1/agents: needs admin" {
		t.Errorf("err = %v", err)
	}
	for _, id := range []string{"", "..", "a/b", "a b"} {
		if _, err := c.ApproveAccessRequest(context.Background(), id, apiwire.AccessRequestApprove{}); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}
	if err := c.DeleteService(context.Background(), ".."); err == nil {
		t.Error("service name .. accepted")
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d requests sent, want 1 (bad ids refused before I/O)", n)
	}
}

func jsonEqual(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("sent body %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return string(gb) == string(wb)
}
