package caddymodule

// Adapters from the state database to what the management API and the
// audit Recorder read and write: agents, operators and their logins,
// access requests and the audit trail. As in stateadapters.go, every
// error passes fromState: database failures come out marked
// (stateError: 503), the state package's sentinels the handlers decide
// on (ErrConflict, ErrAgentGone, ErrTooManyPending) as they are.

import (
	"context"
	"errors"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// identityDB is the API's identityStore over the state database.
type identityDB struct{ db *state.DB }

func (s identityDB) AgentByTokenHash(ctx context.Context, hash [32]byte) (state.AgentRow, bool, error) {
	row, ok, err := s.db.AgentByTokenHash(ctx, hash)
	return row, ok, fromState(err)
}

func (s identityDB) LoginByTokenHash(ctx context.Context, hash [32]byte) (state.LoginRow, state.OperatorRow, bool, error) {
	l, o, ok, err := s.db.LoginByTokenHash(ctx, hash)
	return l, o, ok, fromState(err)
}

func (s identityDB) InsertAgent(ctx context.Context, a state.AgentRow) error {
	return fromState(s.db.InsertAgent(ctx, a))
}

func (s identityDB) Agent(ctx context.Context, name string) (state.AgentRow, bool, error) {
	row, ok, err := s.db.Agent(ctx, name)
	return row, ok, fromState(err)
}

func (s identityDB) ListAgents(ctx context.Context) ([]state.AgentRow, error) {
	rows, err := s.db.ListAgents(ctx)
	return rows, fromState(err)
}

func (s identityDB) UpdateAgent(ctx context.Context, name string, services []string, maxTTL time.Duration, at time.Time) (state.AgentRow, bool, error) {
	row, ok, err := s.db.UpdateAgent(ctx, name, services, maxTTL, at)
	return row, ok, fromState(err)
}

func (s identityDB) RotateAgentToken(ctx context.Context, name string, hash [32]byte, at time.Time, revokeSessions bool) (state.AgentRow, bool, []string, error) {
	row, ok, revoked, err := s.db.RotateAgentToken(ctx, name, hash, at, revokeSessions)
	return row, ok, revoked, fromState(err)
}

func (s identityDB) DeleteAgent(ctx context.Context, name string, at time.Time) (bool, []string, error) {
	ok, revoked, err := s.db.DeleteAgent(ctx, name, at)
	return ok, revoked, fromState(err)
}

func (s identityDB) GrantAgentService(ctx context.Context, name, service string, at time.Time) (bool, error) {
	ok, err := s.db.GrantAgentService(ctx, name, service, at)
	return ok, fromState(err)
}

func (s identityDB) InsertOperator(ctx context.Context, o state.OperatorRow) error {
	return fromState(s.db.InsertOperator(ctx, o))
}

func (s identityDB) Operator(ctx context.Context, name string) (state.OperatorRow, bool, error) {
	o, ok, err := s.db.Operator(ctx, name)
	return o, ok, fromState(err)
}

func (s identityDB) ListOperators(ctx context.Context) ([]state.OperatorRow, error) {
	rows, err := s.db.ListOperators(ctx)
	return rows, fromState(err)
}

func (s identityDB) UpdateOperator(ctx context.Context, name string, role, passwordHash *string, at time.Time) (state.OperatorRow, bool, error) {
	row, ok, err := s.db.UpdateOperator(ctx, name, role, passwordHash, at)
	return row, ok, fromState(err)
}

func (s identityDB) RehashOperatorPassword(ctx context.Context, name, oldHash, newHash string) (bool, error) {
	ok, err := s.db.RehashOperatorPassword(ctx, name, oldHash, newHash)
	return ok, fromState(err)
}

func (s identityDB) DeleteOperator(ctx context.Context, name string) (bool, error) {
	ok, err := s.db.DeleteOperator(ctx, name)
	return ok, fromState(err)
}

func (s identityDB) InsertLogin(ctx context.Context, secrets []state.LoginRow, checkedPasswordHash string) error {
	return fromState(s.db.InsertLogin(ctx, secrets, checkedPasswordHash))
}

func (s identityDB) DeleteLogin(ctx context.Context, id string) error {
	return fromState(s.db.DeleteLogin(ctx, id))
}

func (s identityDB) InsertAccessRequest(ctx context.Context, r state.AccessRequestRow, agentCreatedAt time.Time, maxPending int) error {
	return fromState(s.db.InsertAccessRequest(ctx, r, agentCreatedAt, maxPending))
}

func (s identityDB) AccessRequest(ctx context.Context, id string) (state.AccessRequestRow, bool, error) {
	row, ok, err := s.db.AccessRequest(ctx, id)
	return row, ok, fromState(err)
}

func (s identityDB) ListAccessRequests(ctx context.Context, f state.AccessRequestFilter) ([]state.AccessRequestRow, error) {
	rows, err := s.db.ListAccessRequests(ctx, f)
	return rows, fromState(err)
}

func (s identityDB) PendingAccessRequest(ctx context.Context, agent, service, host string) (state.AccessRequestRow, bool, error) {
	row, ok, err := s.db.PendingAccessRequest(ctx, agent, service, host)
	return row, ok, fromState(err)
}

func (s identityDB) DecideAccessRequest(ctx context.Context, id, status, by, reason string, at time.Time) (state.AccessRequestRow, bool, error) {
	row, ok, err := s.db.DecideAccessRequest(ctx, id, status, by, reason, at)
	return row, ok, fromState(err)
}

func (s identityDB) ListAudit(ctx context.Context, f state.AuditFilter) ([]state.AuditRow, error) {
	rows, err := s.db.ListAudit(ctx, f)
	return rows, fromState(err)
}

// retentionDB deletes what audit.Retention and the login purge say is
// old enough.
type retentionDB struct{ db *state.DB }

func (s retentionDB) DeleteAuditBefore(ctx context.Context, t time.Time) (int, error) {
	n, err := s.db.DeleteAuditBefore(ctx, t)
	return n, fromState(err)
}

func (s retentionDB) DeleteAccessRequestsBefore(ctx context.Context, t time.Time) (int, error) {
	n, err := s.db.DeleteAccessRequestsBefore(ctx, t)
	return n, fromState(err)
}

func (s retentionDB) DeleteLoginsExpiredBefore(ctx context.Context, t time.Time) (int, error) {
	n, err := s.db.DeleteLoginsExpiredBefore(ctx, t)
	return n, fromState(err)
}

// auditStore keeps the audit Recorder's entries in the database.
type auditStore struct{ db *state.DB }

// Insert writes one entry. An id stored already is a retry of a write
// that did commit (the Recorder's contract): written, not an error.
func (s auditStore) Insert(ctx context.Context, e audit.Entry) error {
	err := s.db.InsertAudit(ctx, state.AuditRow{ID: e.ID, At: e.Time, Actor: e.Actor, ActorKind: e.ActorKind,
		Action: string(e.Action), Target: e.Target, Client: e.Client, Detail: e.Detail})
	if errors.Is(err, state.ErrConflict) {
		return nil
	}
	return fromState(err)
}

// Interface guards
var (
	_ identityStore        = identityDB{}
	_ audit.Store          = auditStore{}
	_ audit.RetentionStore = retentionDB{}
	_ loginPurgeStore      = retentionDB{}
)
