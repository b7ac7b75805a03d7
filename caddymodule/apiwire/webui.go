package apiwire

// Whoami is the answer to GET /api/v1/whoami: who the caller is, as the
// web UI needs it to show or hide edit controls (the API still decides
// every request by itself).
type Whoami struct {
	// Kind is "operator", "admin-token", "agent" or "session".
	Kind string `json:"kind"`
	// Name is the operator's or agent's name, the session's id, or
	// "admin-token".
	Name string `json:"name"`
	// Role is the operator's role ("viewer", "admin", "owner"); the
	// admin token acts as "owner"; empty for agents and sessions.
	Role string `json:"role,omitempty"`
	// Can is what the caller may change, as the API's permission rules
	// decide it.
	Can WhoamiCan `json:"can"`
}

// WhoamiCan is which kinds of change a caller may make (the web UI
// renders an edit control only for these); each is false when not.
type WhoamiCan struct {
	// ManageSecrets: create, replace or delete credentials and services.
	ManageSecrets bool `json:"manage_secrets"`
	// ManageAgents: create, change, rotate or delete agents.
	ManageAgents bool `json:"manage_agents"`
	// ManageOperators: create, change or delete operators.
	ManageOperators bool `json:"manage_operators"`
	// DecideRequests: approve or deny access requests.
	DecideRequests bool `json:"decide_requests"`
	// ManageSessions: revoke or renew sessions.
	ManageSessions bool `json:"manage_sessions"`
}

// ServiceMatch is the answer to GET /api/v1/services/match?url=: the
// service a proxied request to URL would match, if any, and why.
type ServiceMatch struct {
	URL string `json:"url"`
	// Service is the matching service's name; null when none matches.
	Service *string `json:"service"`
	Host    string  `json:"host"`
	Port    int     `json:"port"`
	TLS     bool    `json:"tls"`
	// Reason says why it matched or why nothing did.
	Reason string `json:"reason"`
}
