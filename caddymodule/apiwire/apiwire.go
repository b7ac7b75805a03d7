// Package apiwire defines the JSON bodies of the agent-vault management
// API (/api/v1/... and /healthz): the server encodes its answers with
// these types and clients such as av-launch decode them, so the two
// cannot drift apart.
//
// It imports no Caddy code, so clients can use it without linking the
// server. Times are RFC 3339 strings (as encoding/json writes
// time.Time); durations are Go duration strings such as "1h30m".
package apiwire

import (
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// SessionRequest is the body of POST /api/v1/sessions.
type SessionRequest struct {
	// Services names the services the session may use. Omit it (or
	// send null) for every service defined at creation; an empty list
	// is refused (400), so that an unset variable cannot widen a
	// session to everything. omitzero, unlike omitempty, still sends
	// an empty list, so the server sees that mistake too.
	Services []string `json:"services,omitzero"`
	// TTL is the session lifetime as a Go duration ("1h"); empty for
	// the server's default. The server refuses one above its maximum.
	TTL string `json:"ttl"`
	// Lease asks for a leased session: it ends when it is not renewed
	// (POST /api/v1/sessions/{id}/renew) within the server's
	// session_lease_timeout, as well as at its expiry. av-launch asks
	// for one and renews it while its command runs.
	Lease bool `json:"lease,omitempty"`
}

// Session is the answer to POST /api/v1/sessions (201). It is the only
// answer that carries the session token: keep it secret.
type Session struct {
	// ID names the session in GET and DELETE /api/v1/sessions/{id}.
	ID string `json:"id"`
	// Token authenticates the agent to the proxy, as the password of
	// the proxy URL's userinfo.
	Token string `json:"token"`
	// ProxyURL is the credential-injecting proxy, without userinfo.
	ProxyURL string `json:"proxy_url"`
	// CAPEM is the PEM certificate of the CA the agent must trust for
	// the proxy's TLS interception.
	CAPEM string `json:"ca_pem"`
	// ExpiresAt is when the session stops working.
	ExpiresAt time.Time `json:"expires_at"`
	// Services are the services the session may use, fixed at creation.
	Services []string `json:"services"`
	// Placeholders maps each credential name the session's services
	// use to the placeholder the agent sends instead of its value.
	Placeholders map[string]string `json:"placeholders"`
	// Agent names the agent the session belongs to; absent for a
	// session minted with the admin token or an operator's login.
	Agent string `json:"agent,omitempty"`
	// LeaseTimeout, for a leased session, is how long it lives without
	// a renewal (a Go duration); renew well within it. Absent otherwise.
	LeaseTimeout string `json:"lease_timeout,omitempty"`
	// LeaseExpiresAt, for a leased session, is when it ends unless
	// renewed.
	LeaseExpiresAt *time.Time `json:"lease_expires_at,omitempty"`
	// CredentialNames is every credential name the broker knows (names,
	// never values), so a launcher can remove inherited variables of
	// those names from the child's environment.
	CredentialNames []string `json:"credential_names,omitempty"`
}

// Session statuses, as SessionInfo reports them.
const (
	SessionActive  = "active"
	SessionExpired = "expired"
	SessionRevoked = "revoked"
)

// SessionInfo is a session as GET /api/v1/sessions lists it: never its
// token.
type SessionInfo struct {
	// ID names the session.
	ID string `json:"id"`
	// Services are the services the session may use.
	Services []string `json:"services"`
	// CreatedAt is when the session was created.
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the session stops (or stopped) working.
	ExpiresAt time.Time `json:"expires_at"`
	// Status is "active", "expired" or "revoked".
	Status string `json:"status"`
	// Requests counts the requests the proxy served for the session.
	Requests uint64 `json:"requests"`
	// LastUsed is the time of the last such request; absent if none.
	LastUsed *time.Time `json:"last_used,omitempty"`
	// Agent names the agent the session belongs to; absent if none.
	Agent string `json:"agent,omitempty"`
	// LeaseExpiresAt, for a leased session, is when it ends unless
	// renewed; absent for a session without a lease.
	LeaseExpiresAt *time.Time `json:"lease_expires_at,omitempty"`
}

// SessionList is the answer to GET /api/v1/sessions.
type SessionList struct {
	// Sessions are newest first; never null. Expired and revoked
	// sessions stay listed for a while after they end.
	Sessions []SessionInfo `json:"sessions"`
}

// Credential describes one credential without its value: the answer to
// PUT /api/v1/credentials/{name} and an entry of CredentialList.
type Credential = storebackends.Meta

// CredentialPutRequest is the body of PUT /api/v1/credentials/{name}
// that stores a value. The other body that endpoint takes defines a
// credential that mints short-lived tokens: a JSON object with "kind"
// (oauth2_refresh, oauth2_client_credentials or github_app) and that
// kind's fields, as tokensource.Spec documents them; fields that name
// credentials name them, never hold values. It answers
// CredentialPutResponse.
type CredentialPutRequest struct {
	// Value is the secret to store; required (a pointer so that a
	// missing value is told apart from an empty one).
	Value *string `json:"value"`
}

// CredentialPutResponse answers PUT /api/v1/credentials/{NAME}, a
// value's or a token source's: one shape for both.
type CredentialPutResponse struct {
	Credential
	// Warnings name input credentials no store holds yet; omitted when
	// there are none.
	Warnings []string `json:"warnings,omitempty"`
}

// CredentialList is the answer to GET /api/v1/credentials. It lists
// names and metadata only, never values.
type CredentialList struct {
	// Credentials are sorted by name; null when there are none.
	Credentials []Credential `json:"credentials"`
}

// Service is a service definition: the body of PUT
// /api/v1/services/{name} and an entry of ServiceList.
type Service = services.Service

// ServiceAuth is how a service's credential is put into a request
// (Service.Auth); which of its fields apply depends on its Type.
type ServiceAuth = services.Auth

// The values of ServiceAuth.Type. They are the services package's own
// constants, the ones the server validates against, so a client cannot
// offer a type the server does not know.
const (
	AuthBearer      = services.AuthBearer      // Authorization: Bearer <token>
	AuthBasic       = services.AuthBasic       // Authorization: Basic <username:password>
	AuthAPIKey      = services.AuthAPIKey      // <header>: <prefix><key>
	AuthCustom      = services.AuthCustom      // headers from templates
	AuthQuery       = services.AuthQuery       // ?<param>=<key>
	AuthPassthrough = services.AuthPassthrough // nothing injected; the host is only allowed
)

// AuthTypes returns every value of ServiceAuth.Type, the most common
// first (the order a form offers them in).
func AuthTypes() []string {
	return []string{AuthBearer, AuthBasic, AuthAPIKey, AuthCustom, AuthQuery, AuthPassthrough}
}

// ServiceList is the answer to GET /api/v1/services.
type ServiceList struct {
	// Services are every defined service; never null.
	Services []Service `json:"services"`
}

// ServicePutResponse is the answer to PUT /api/v1/services/{name}: the
// stored service, its fields inline, plus any warnings.
type ServicePutResponse struct {
	Service
	// Warnings are problems that did not stop the service from being
	// stored, such as a credential it names that no store holds (its
	// requests fail until one does); absent if none.
	Warnings []string `json:"warnings,omitempty"`
}

// StoreStatus is one store's entry in StoreList; see
// storebackends.StoreStatus, which synced stores produce.
type StoreStatus = storebackends.StoreStatus

// StoreList is the answer to GET /api/v1/stores.
type StoreList struct {
	// Stores are in priority order: when two hold the same credential
	// name, the earlier one wins.
	Stores []StoreStatus `json:"stores"`
}

// Error is the body of every error answer (4xx, 5xx).
type Error struct {
	// Error says what went wrong; it never contains a credential value.
	Error string `json:"error"`
}

// Health statuses, as Health reports them.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
)

// Health is the answer to GET /healthz (no authentication): 200 with
// "ok", or 503 with "degraded" while a store is past its staleness
// bound (requests that need its credentials are refused).
type Health struct {
	// Status is "ok" or "degraded".
	Status string `json:"status"`
	// Reason says why the server is degraded; absent when ok.
	Reason string `json:"reason,omitempty"`
}
