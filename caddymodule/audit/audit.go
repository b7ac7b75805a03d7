// Package audit records the management API's changes: who (actor and
// its kind) did what (a closed set of actions) to which target, from
// which client address, when. An entry never holds a credential value,
// a password or a token: only names and short facts in Detail.
//
// A Recorder writes each entry to a Store (the state database, through
// an adapter the app provides) right after the change succeeded, and
// keeps the entries it could not write for Retry. The query side's
// cursor codec lives here too, so that the API's pages and the store's
// ordering agree.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// Action is what an entry records; the set is closed (Actions).
type Action string

// Actions.
const (
	CredentialPut       Action = "credential.put"
	CredentialDelete    Action = "credential.delete"
	ServicePut          Action = "service.put"
	ServiceDelete       Action = "service.delete"
	AgentCreate         Action = "agent.create"
	AgentUpdate         Action = "agent.update"
	AgentDelete         Action = "agent.delete"
	AgentRotate         Action = "agent.rotate"
	OperatorCreate      Action = "operator.create"
	OperatorUpdate      Action = "operator.update"
	OperatorDelete      Action = "operator.delete"
	SessionCreate       Action = "session.create"
	SessionRevoke       Action = "session.revoke"
	SessionLeaseExpired Action = "session.lease_expired"
	RequestCreate       Action = "request.create"
	RequestApprove      Action = "request.approve"
	RequestDeny         Action = "request.deny"
	Login               Action = "login"
	LoginFailed         Action = "login.failed"
	Logout              Action = "logout"
)

var actions = []Action{
	CredentialPut, CredentialDelete, ServicePut, ServiceDelete,
	AgentCreate, AgentUpdate, AgentDelete, AgentRotate,
	OperatorCreate, OperatorUpdate, OperatorDelete,
	SessionCreate, SessionRevoke, SessionLeaseExpired,
	RequestCreate, RequestApprove, RequestDeny,
	Login, LoginFailed, Logout,
}

// Actions lists every action.
func Actions() []Action { return append([]Action(nil), actions...) }

// Valid reports whether a is one of Actions.
func (a Action) Valid() bool {
	for _, b := range actions {
		if a == b {
			return true
		}
	}
	return false
}

// ParseAction reads an action's name (the ?action= filter of GET
// /api/v1/audit); anything else is an error naming what is allowed.
func ParseAction(s string) (Action, error) {
	if a := Action(s); a.Valid() {
		return a, nil
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return "", fmt.Errorf("unknown audit action %q: use one of %v", s, actions)
}

// Actor kinds, an entry's ActorKind (the API's actor_kind).
const (
	ActorAdminToken = apiwire.ActorAdminToken
	ActorOperator   = apiwire.ActorOperator
	ActorAgent      = apiwire.ActorAgent
	ActorSession    = apiwire.ActorSession
	// ActorBroker: the broker itself (Actor: its instance id).
	ActorBroker = apiwire.ActorBroker
)

var actorKinds = []string{ActorAdminToken, ActorOperator, ActorAgent, ActorSession, ActorBroker}

// ActorKinds lists every actor kind.
func ActorKinds() []string { return slices.Clone(actorKinds) }

func validActorKind(k string) bool { return slices.Contains(actorKinds, k) }

// UnknownName is the actor and target of a login.failed entry whose
// name is no operator's.
const UnknownName = "(unknown name)"

// FailedLogin is the login.failed entry of a failed login as name from
// client. known says whether name is an existing operator's: only then
// does the entry name it (actor and target); otherwise it says
// UnknownName, since what was typed as a name may be a password typed
// into the wrong field, which must reach neither the trail nor the
// logs (Recorder logs an entry's actor and target when the store
// fails).
func FailedLogin(name string, known bool, client string) Entry {
	if !known {
		name = UnknownName
	}
	return Entry{Actor: name, ActorKind: ActorOperator, Action: LoginFailed, Target: name, Client: client}
}

// Entry is one recorded change.
type Entry struct {
	// ID is "aud_" and 24 hex digits; Record sets it when empty.
	ID string
	// Time is when the change happened; Record sets it (UTC) when zero.
	Time time.Time
	// Actor names who made the change: an operator, "admin-token", an
	// agent, a broker's instance id; ActorKind says which kind
	// ("admin-token", "operator", "agent", "session", "broker").
	Actor, ActorKind string
	Action           Action
	// Target names what was changed: a credential, service, agent,
	// operator, session or request (for login.failed, the operator
	// tried, or UnknownName: see FailedLogin).
	Target string
	// Client is the client's address (the host of r.RemoteAddr).
	Client string
	// Detail is a short fact ("role admin", "services github,npm"),
	// never a value, password or token.
	Detail string
}

// Store keeps entries. Insert must treat an entry whose ID is already
// stored as written (a retry of a write that did commit).
type Store interface {
	Insert(ctx context.Context, e Entry) error
}

// NewID makes an entry id: "aud_" and 24 random hex digits.
func NewID() string {
	b := make([]byte, 12)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return "aud_" + hex.EncodeToString(b)
}
