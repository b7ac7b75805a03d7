package webui

// Sessions, agents, access requests and operators.

import (
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

type sessionsData struct {
	Active, Ended []apiwire.SessionInfo
	Err           string
}

func (u *UI) sessions(c *call) {
	if c.r.Method == http.MethodPost {
		id := c.field("id")
		switch c.action() {
		case "revoke":
			_, err := c.do(http.MethodDelete, "/api/v1/sessions/"+seg(id), nil, nil)
			c.done(err, "session "+id+" revoked")
		default:
			c.done(errNoAction, "")
		}
		return
	}
	var d sessionsData
	var list apiwire.SessionList
	if err := c.get("/api/v1/sessions", &list); err != nil {
		d.Err = errText(err)
	}
	for _, s := range list.Sessions {
		if s.Status == apiwire.SessionActive {
			d.Active = append(d.Active, s)
		} else {
			d.Ended = append(d.Ended, s)
		}
	}
	c.render("sessions", "Sessions", d)
}

type agentsData struct {
	Agents []apiwire.Agent
	Err    string
	// Shown is the agent whose token was just made (create, rotate):
	// the one page that shows it, never a redirect's URL.
	Shown *apiwire.Agent
}

func (u *UI) agents(c *call) {
	if c.r.Method == http.MethodPost {
		name := c.field("name")
		var shown apiwire.Agent
		var err error
		switch c.action() {
		case "create":
			_, err = c.do(http.MethodPost, "/api/v1/agents", apiwire.AgentCreateRequest{Name: name, Services: c.list("services"), MaxSessionTTL: c.field("max_session_ttl")}, &shown)
		case "rotate":
			_, err = c.do(http.MethodPost, "/api/v1/agents/"+seg(name)+"/rotate", nil, &shown)
		case "update":
			ttl := c.field("max_session_ttl")
			_, err = c.do(http.MethodPatch, "/api/v1/agents/"+seg(name), apiwire.AgentPatchRequest{Services: c.list("services"), MaxSessionTTL: &ttl}, nil)
			c.done(err, "agent "+name+" updated")
			return
		case "delete":
			_, err = c.do(http.MethodDelete, "/api/v1/agents/"+seg(name), nil, nil)
			c.done(err, "agent "+name+" deleted")
			return
		default:
			c.done(errNoAction, "")
			return
		}
		if err != nil {
			c.done(err, "")
			return
		}
		// The token is shown on this answer only (no redirect: it must
		// never be in a URL or a page that can be reloaded from cache).
		d := u.agentsList(c)
		d.Shown = &shown
		c.render("agents", "Agents", d)
		return
	}
	c.render("agents", "Agents", u.agentsList(c))
}

func (u *UI) agentsList(c *call) agentsData {
	var d agentsData
	var list apiwire.AgentList
	if err := c.get("/api/v1/agents", &list); err != nil {
		d.Err = errText(err)
	}
	d.Agents = list.Agents
	return d
}

type requestsData struct {
	Requests []apiwire.AccessRequest
	Services []apiwire.Service
	Err      string
}

func (u *UI) requests(c *call) {
	if c.r.Method == http.MethodPost {
		id := c.field("id")
		switch c.action() {
		case "approve":
			_, err := c.do(http.MethodPost, "/api/v1/requests/"+seg(id)+"/approve", apiwire.AccessRequestApprove{Grant: c.field("grant")}, nil)
			c.done(err, "request "+id+" approved")
		case "deny":
			_, err := c.do(http.MethodPost, "/api/v1/requests/"+seg(id)+"/deny", apiwire.AccessRequestDeny{Reason: c.field("reason")}, nil)
			c.done(err, "request "+id+" denied")
		default:
			c.done(errNoAction, "")
		}
		return
	}
	var d requestsData
	var list apiwire.AccessRequestList
	if err := c.get("/api/v1/requests", &list); err != nil {
		d.Err = errText(err)
	}
	var svcs apiwire.ServiceList
	c.get("/api/v1/services", &svcs)
	d.Requests, d.Services = list.Requests, svcs.Services
	c.render("requests", "Access requests", d)
}

type operatorsData struct {
	Operators []apiwire.Operator
	Roles     []string
	Err       string
}

func (u *UI) operators(c *call) {
	if c.r.Method == http.MethodPost {
		name := c.field("name")
		switch c.action() {
		case "create":
			_, err := c.do(http.MethodPost, "/api/v1/operators", apiwire.OperatorCreateRequest{Name: name, Password: c.r.PostForm.Get("password"), Role: c.field("role")}, nil)
			c.done(err, "operator "+name+" created")
		case "update":
			role := c.field("role")
			_, err := c.do(http.MethodPatch, "/api/v1/operators/"+seg(name), apiwire.OperatorPatchRequest{Role: &role}, nil)
			c.done(err, "operator "+name+" is now "+role)
		case "delete":
			_, err := c.do(http.MethodDelete, "/api/v1/operators/"+seg(name), nil, nil)
			c.done(err, "operator "+name+" deleted")
		default:
			c.done(errNoAction, "")
		}
		return
	}
	d := operatorsData{Roles: []string{apiwire.RoleViewer, apiwire.RoleAdmin, apiwire.RoleOwner}}
	var list apiwire.OperatorList
	if err := c.get("/api/v1/operators", &list); err != nil {
		d.Err = errText(err)
	}
	d.Operators = list.Operators
	c.render("operators", "Operators", d)
}
