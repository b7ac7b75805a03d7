package identity

import (
	"fmt"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// Role is an operator's role. Each role may do all the weaker one may:
// viewer < admin < owner. The zero Role is no role and may do nothing.
type Role uint8

// Roles, weakest first.
const (
	// RoleViewer reads everything the API shows (never a value).
	RoleViewer Role = iota + 1
	// RoleAdmin also manages credentials, services, agents, sessions
	// and access requests.
	RoleAdmin
	// RoleOwner also manages operators. The admin token acts as owner.
	RoleOwner
)

// String is the role's name in the API ("viewer", "admin", "owner"),
// or "none" for the zero Role.
func (r Role) String() string {
	switch r {
	case RoleViewer:
		return apiwire.RoleViewer
	case RoleAdmin:
		return apiwire.RoleAdmin
	case RoleOwner:
		return apiwire.RoleOwner
	}
	return "none"
}

// ParseRole reads a role's name; anything else is an *InvalidError.
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{RoleViewer, RoleAdmin, RoleOwner} {
		if s == r.String() {
			return r, nil
		}
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return 0, &InvalidError{Reason: fmt.Sprintf("unknown role %q: use viewer, admin or owner", s)}
}

// PrincipalKind says how a caller authenticated.
type PrincipalKind uint8

// Principal kinds. The zero kind is no caller at all.
const (
	PrincipalNone PrincipalKind = iota
	// PrincipalAdminToken: the configured admin token; it acts as owner.
	PrincipalAdminToken
	// PrincipalOperator: an operator's login token (header or cookie).
	PrincipalOperator
	// PrincipalAgent: an agent token.
	PrincipalAgent
	// PrincipalSession: a session's proxy token.
	PrincipalSession
)

// AdminTokenName is the admin token principal's name, its actor in the
// audit trail.
const AdminTokenName = apiwire.ActorAdminToken

// Principal is an authenticated caller of the management API.
type Principal struct {
	Kind PrincipalKind
	// Name: AdminTokenName, the operator's or the agent's name; for a
	// session, the session's agent (possibly "").
	Name string
	// Role: an operator's role; RoleOwner for the admin token; zero for
	// agents and sessions.
	Role Role
	// Agent: the agent the caller acts for; the agent's name for an
	// agent, the session's agent (possibly "") for a session, "" for
	// operators and the admin token.
	Agent string
	// SessionID: a session principal's session.
	SessionID string
}

// AdminTokenPrincipal is the caller holding the admin token.
func AdminTokenPrincipal() Principal {
	return Principal{Kind: PrincipalAdminToken, Name: AdminTokenName, Role: RoleOwner}
}

// OperatorPrincipal is operator name logged in with role.
func OperatorPrincipal(name string, role Role) Principal {
	return Principal{Kind: PrincipalOperator, Name: name, Role: role}
}

// AgentPrincipal is the caller holding agent name's token.
func AgentPrincipal(name string) Principal {
	return Principal{Kind: PrincipalAgent, Name: name, Agent: name}
}

// SessionPrincipal is the caller holding session id's token; agent is
// the agent the session was opened for, "" if none.
func SessionPrincipal(id, agent string) Principal {
	return Principal{Kind: PrincipalSession, Name: agent, Agent: agent, SessionID: id}
}

// Actor is the audit trail's actor for p: AdminTokenName, the operator
// or the agent; for a session its Agent, or the session's id when it
// has none (so that an entry always names someone).
func (p Principal) Actor() string {
	if p.Kind == PrincipalSession {
		if p.Agent == "" {
			return p.SessionID
		}
		return p.Agent
	}
	return p.Name
}

// ActorKind is the audit trail's actor_kind for p: "admin-token",
// "operator", "agent" or "session" ("" for no principal).
func (p Principal) ActorKind() string {
	switch p.Kind {
	case PrincipalAdminToken:
		return apiwire.ActorAdminToken
	case PrincipalOperator:
		return apiwire.ActorOperator
	case PrincipalAgent:
		return apiwire.ActorAgent
	case PrincipalSession:
		return apiwire.ActorSession
	}
	return ""
}

// OwnOnly reports whether p may act only on what is its agent's own (p
// is an agent or a session). Allowed lets such a caller through
// ListSessions, MintSession, ManageSessions, AskAccess and
// ListRequests; the handler must then keep to p.Agent's sessions and
// requests (and answer 404 for another's), ask for p.Agent, and keep to
// the agent's limits (SessionServices, SessionTTL).
func (p Principal) OwnOnly() bool {
	return p.Kind == PrincipalAgent || p.Kind == PrincipalSession
}

// Permission is what one API route needs. The set is closed: every
// route but the public ones (GET /healthz, GET /api/v1/ca.pem, POST
// /api/v1/login) is wrapped with exactly one.
type Permission uint8

// Permissions, with the routes that need them and who holds them.
const (
	// ReadAll: GET credentials, stores, services, agents, agents/{n},
	// operators, audit. Operators (viewer and up), the admin token.
	ReadAll Permission = iota + 1
	// ManageSecrets: PUT/DELETE credentials/{n} and services/{n}.
	// Admin and up.
	ManageSecrets
	// ManageAgents: POST agents, PATCH/DELETE agents/{n}, POST
	// agents/{n}/rotate. Admin and up.
	ManageAgents
	// ManageOperators: POST operators, PATCH/DELETE operators/{n}.
	// Owner (and the admin token).
	ManageOperators
	// DecideRequests: POST requests/{id}/approve and /deny. Admin and up.
	DecideRequests
	// ListSessions: GET /api/v1/sessions. Viewer and up; an agent (its
	// own sessions only).
	ListSessions
	// MintSession: POST /api/v1/sessions. Admin and up; an agent
	// (within its services and max_session_ttl).
	MintSession
	// ManageSessions: DELETE /api/v1/sessions/{id}, POST
	// sessions/{id}/renew. Admin and up; an agent (its own; another's
	// is 404).
	ManageSessions
	// AskAccess: POST /api/v1/requests. An agent; a session opened for
	// an agent.
	AskAccess
	// ListRequests: GET /api/v1/requests. Viewer and up; an agent and a
	// session opened for an agent (that agent's requests only).
	ListRequests
	// ReadOwnSession: GET /api/v1/session (the caller's own session). A
	// session.
	ReadOwnSession
	// Logout: POST /api/v1/logout. Operators; the admin token (a no-op).
	Logout

	numPermissions = iota + 1 // one past the last; index 0 is unused
)

// Permissions lists every permission.
func Permissions() []Permission {
	out := make([]Permission, 0, numPermissions-1)
	for p := ReadAll; p < numPermissions; p++ {
		out = append(out, p)
	}
	return out
}

// String says what the permission lets one do ("manage agents").
func (p Permission) String() string {
	if p < ReadAll || p >= numPermissions {
		return fmt.Sprintf("permission(%d)", uint8(p))
	}
	return rules[p].what
}

// column is who a permission table row speaks of. The admin token is
// colOwner.
type column uint8

const (
	colSession column = iota
	colAgent
	colViewer
	colAdmin
	colOwner
	numColumns
)

// x marks a holder in the table below.
const x = true

// rules is the permission table, the one place deciding who may do
// what; see the design's table of endpoints (TestAllowedMatrix spells
// it out again).
var rules = [numPermissions]struct {
	what  string
	allow [numColumns]bool // session, agent, viewer, admin, owner
}{
	ReadAll:         {"read credentials, stores, services, agents, operators or the audit trail", [numColumns]bool{colViewer: x, colAdmin: x, colOwner: x}},
	ManageSecrets:   {"manage credentials or services", [numColumns]bool{colAdmin: x, colOwner: x}},
	ManageAgents:    {"manage agents", [numColumns]bool{colAdmin: x, colOwner: x}},
	ManageOperators: {"manage operators", [numColumns]bool{colOwner: x}},
	DecideRequests:  {"approve or deny access requests", [numColumns]bool{colAdmin: x, colOwner: x}},
	ListSessions:    {"list sessions", [numColumns]bool{colAgent: x, colViewer: x, colAdmin: x, colOwner: x}},
	MintSession:     {"open sessions", [numColumns]bool{colAgent: x, colAdmin: x, colOwner: x}},
	ManageSessions:  {"revoke or renew sessions", [numColumns]bool{colAgent: x, colAdmin: x, colOwner: x}},
	AskAccess:       {"ask for access", [numColumns]bool{colSession: x, colAgent: x}},
	ListRequests:    {"list access requests", [numColumns]bool{colSession: x, colAgent: x, colViewer: x, colAdmin: x, colOwner: x}},
	ReadOwnSession:  {"read the calling session", [numColumns]bool{colSession: x}},
	Logout:          {"log out", [numColumns]bool{colViewer: x, colAdmin: x, colOwner: x}},
}

// Allowed decides whether p may use a route needing perm: nil, or a
// *ForbiddenError saying who may not do what and what it needs ("role
// viewer may not manage agents: needs admin"; its On method puts the
// route in instead), or ErrNoToken for no principal. A principal that
// is not what its constructor makes (the admin token not named
// AdminTokenName with RoleOwner; an operator without a name or role;
// an agent without a name or whose Agent is not its Name; a session
// without an id or whose Name is not its Agent; any field its kind
// does not use set; an operator or agent named AdminTokenName) is
// refused: it can only be a bug, and a bug must not grant anything. A
// session opened without an agent has no requests of its own, so it
// may neither ask for access nor list requests.
func Allowed(p Principal, perm Permission) error {
	if perm < ReadAll || perm >= numPermissions {
		return fmt.Errorf("identity: unknown permission %d", uint8(perm))
	}
	rule := rules[perm]
	var col column
	var who string
	switch p.Kind {
	case PrincipalNone:
		return ErrNoToken
	case PrincipalAdminToken:
		if p != AdminTokenPrincipal() {
			return &ForbiddenError{Reason: "an admin-token caller that is not the admin token (owner, named " + AdminTokenName + ") may not do anything"}
		}
		col, who = colOwner, "the admin token"
	case PrincipalOperator:
		if p.Name == "" || p.Name == AdminTokenName || p.Role < RoleViewer || p.Role > RoleOwner || p.Agent != "" || p.SessionID != "" {
			return &ForbiddenError{Reason: "an operator without a valid name or role may not do anything"}
		}
		col, who = colViewer+column(p.Role-RoleViewer), "role "+p.Role.String()
	case PrincipalAgent:
		if p.Name == "" || p.Name == AdminTokenName || p.Agent != p.Name || p.Role != 0 || p.SessionID != "" {
			return &ForbiddenError{Reason: "an agent without a valid name may not do anything"}
		}
		col, who = colAgent, "an agent token"
	case PrincipalSession:
		if p.SessionID == "" || p.Name != p.Agent || p.Role != 0 {
			return &ForbiddenError{Reason: "a session without an id, or whose name is not its agent's, may not do anything"}
		}
		col, who = colSession, "a session token"
	default:
		return &ForbiddenError{Reason: fmt.Sprintf("an unknown kind of caller (%d) may not do anything", uint8(p.Kind))}
	}
	if !rule.allow[col] {
		return forbidden(who, rule.what, needs(perm, col))
	}
	if col == colSession && p.Agent == "" && (perm == AskAccess || perm == ListRequests) {
		return forbidden("a session opened without an agent", rule.what, "only an agent's sessions may; open the session with an agent token")
	}
	return nil
}

// needs says what it takes to hold perm, to a caller in col who does not.
func needs(perm Permission, col column) string {
	allow := rules[perm].allow
	for c := colViewer; c <= colOwner; c++ {
		if !allow[c] {
			continue
		}
		role := Role(c-colViewer) + RoleViewer
		switch {
		case col >= colViewer:
			return "needs " + role.String()
		case allow[colAgent]:
			// Only a session can be here (an agent holds perm): its
			// agent's own token may.
			return "needs an agent token, an operator login (role " + role.String() + " or above) or the admin token"
		case c == colOwner:
			return "needs an operator login with role owner, or the admin token"
		}
		return "needs an operator login (role " + role.String() + " or above) or the admin token"
	}
	switch {
	case allow[colAgent] && allow[colSession]:
		return "only an agent may, with its agent token or its session's token"
	case allow[colSession]:
		return "only a session may, with its own token"
	}
	return "nobody may"
}
