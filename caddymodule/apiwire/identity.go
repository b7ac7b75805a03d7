package apiwire

import "time"

// AllServices, as an agent's only service, allows it every service,
// those defined later included.
const AllServices = "*"

// AgentCreateRequest is the body of POST /api/v1/agents.
type AgentCreateRequest struct {
	// Name names the agent: ^[a-z0-9][a-z0-9_.-]{0,63}$.
	Name string `json:"name"`
	// Services the agent may open sessions for: existing service
	// names, or ["*"] for every service. Required, never empty.
	Services []string `json:"services"`
	// MaxSessionTTL is the longest session the agent may mint, as a Go
	// duration ("1h"); empty for the server's max_session_ttl.
	MaxSessionTTL string `json:"max_session_ttl,omitempty"`
}

// AgentPatchRequest is the body of PATCH /api/v1/agents/{name}: the
// fields given replace the agent's; absent fields stay.
type AgentPatchRequest struct {
	Services      []string `json:"services,omitzero"`
	MaxSessionTTL *string  `json:"max_session_ttl,omitempty"`
}

// Agent is an agent as the API shows it. Token is set only in the
// answers of POST /api/v1/agents and POST /api/v1/agents/{name}/rotate:
// it is shown once, and only its hash is kept.
type Agent struct {
	Name          string    `json:"name"`
	Token         string    `json:"token,omitempty"`
	Services      []string  `json:"services"`
	MaxSessionTTL string    `json:"max_session_ttl"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// RevokedSessions lists the sessions a PATCH ended because they
	// were no longer within the agent's new limits, or that a rotation
	// with ?revoke_sessions=true ended; absent otherwise.
	RevokedSessions []string `json:"revoked_sessions,omitempty"`
}

// AgentList is the answer to GET /api/v1/agents.
type AgentList struct {
	// Agents are sorted by name; never null.
	Agents []Agent `json:"agents"`
}

// Operator roles, weakest first.
const (
	RoleViewer = "viewer"
	RoleAdmin  = "admin"
	RoleOwner  = "owner"
)

// OperatorCreateRequest is the body of POST /api/v1/operators.
type OperatorCreateRequest struct {
	Name string `json:"name"`
	// Password is at least 12 characters; only its argon2id hash is kept.
	Password string `json:"password"`
	// Role is "viewer", "admin" or "owner".
	Role string `json:"role"`
}

// OperatorPatchRequest is the body of PATCH /api/v1/operators/{name}.
// A new password ends the operator's logins.
type OperatorPatchRequest struct {
	Password *string `json:"password,omitempty"`
	Role     *string `json:"role,omitempty"`
}

// Operator is an operator as the API shows it: never a password or hash.
type Operator struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// OperatorList is the answer to GET /api/v1/operators.
type OperatorList struct {
	// Operators are sorted by name; never null.
	Operators []Operator `json:"operators"`
}

// LoginRequest is the body of POST /api/v1/login.
// Either Name and Password, or AdminToken alone: the admin token
// signs in as the reserved operator name "admin-token" acting as owner
// (the web UI's admin sign-in).
type LoginRequest struct {
	Name       string `json:"name"`
	Password   string `json:"password"`
	AdminToken string `json:"admin_token,omitempty"`
}

// Login is the answer to POST /api/v1/login (200). API clients send
// Token as a Bearer token. For browsers the login also sets an
// HttpOnly, SameSite=Strict cookie holding a second secret of the same
// login (not Token: browsers send cookies to every port of the host),
// which may only read and log out; changes need Token.
type Login struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Role      string    `json:"role"`
}

// Access request statuses.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
)

// AccessRequestCreate is the body of POST /api/v1/requests: exactly one
// of Service (an existing service the agent is not allowed) and Host (a
// host no service covers yet).
type AccessRequestCreate struct {
	Service string `json:"service,omitempty"`
	Host    string `json:"host,omitempty"`
	// Reason tells the operator why; at most 500 characters.
	Reason string `json:"reason,omitempty"`
}

// AccessRequest is one access request.
type AccessRequest struct {
	ID        string    `json:"id"`
	Agent     string    `json:"agent"`
	Session   string    `json:"session,omitempty"`
	Service   string    `json:"service,omitempty"`
	Host      string    `json:"host,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	// DecidedAt, DecidedBy and DecisionReason are set once it is
	// approved or denied.
	DecidedAt      *time.Time `json:"decided_at,omitempty"`
	DecidedBy      string     `json:"decided_by,omitempty"`
	DecisionReason string     `json:"decision_reason,omitempty"`
	// Granted is the service an approval granted (set in the answer of
	// POST /api/v1/requests/{id}/approve).
	Granted string `json:"granted,omitempty"`
}

// AccessRequestList is the answer to GET /api/v1/requests.
type AccessRequestList struct {
	// Requests are newest first; never null.
	Requests []AccessRequest `json:"requests"`
}

// AccessRequestApprove is the optional body of POST
// /api/v1/requests/{id}/approve. For a host request, Service is the
// full definition of a service to create for it (validated before
// anything is written), or Grant names an existing service covering
// the host; with neither, the one service that covers the host is
// granted, and approving is refused (400, naming them) when several
// do. At most one of the two.
type AccessRequestApprove struct {
	Service *Service `json:"service,omitempty"`
	Grant   string   `json:"grant,omitempty"`
}

// AccessRequestDeny is the optional body of POST /api/v1/requests/{id}/deny.
type AccessRequestDeny struct {
	Reason string `json:"reason,omitempty"`
}

// Audit actor kinds. ActorBroker is the broker itself (its actor is
// its instance id): what it does on its own, such as creating the
// local agent at start-up.
const (
	ActorAdminToken = "admin-token"
	ActorOperator   = "operator"
	ActorAgent      = "agent"
	ActorSession    = "session"
	ActorBroker     = "broker"
)

// AuditEntry is one recorded management change. Detail never holds a
// value, password or token.
type AuditEntry struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`
	ActorKind string    `json:"actor_kind"`
	Action    string    `json:"action"`
	Target    string    `json:"target"`
	Client    string    `json:"client"`
	Detail    string    `json:"detail,omitempty"`
}

// AuditList is the answer to GET /api/v1/audit.
type AuditList struct {
	// Entries are newest first; never null.
	Entries []AuditEntry `json:"entries"`
	// NextBefore, passed as ?before=, fetches the next (older) page;
	// absent on the last page.
	NextBefore string `json:"next_before,omitempty"`
}

// LeaseRenewal is the answer to POST /api/v1/sessions/{id}/renew.
type LeaseRenewal struct {
	ID             string    `json:"id"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
}
