package caddymodule

// Adapters from the state database to the small interfaces its
// consumers define (catalog.Store, sessions.Store,
// storebackends.Records): the consumers never import package state, and
// every database error they pass on is marked as one (stateError), so
// the API and the proxy answer 503 with its reason.

import (
	"context"
	"errors"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// stateError marks a failure of the state database, the one type the
// API's apiError and the proxy's errorResponse know it by (503). Its
// text is the database's own ("state sqlite: ..."), which never holds
// a secret or a DSN password but does name the database's host, user
// and name: it is for the log, and callers get a fixed text.
type stateError struct{ err error }

func (e *stateError) Error() string { return e.err.Error() }
func (e *stateError) Unwrap() error { return e.err }

// fromState is the one translation of the state database's errors for
// its consumers: each is marked as the database's (stateError), except
// the state package's sentinels that answer the caller rather than
// report an outage, which stay in the chain for errors.Is: a conflict
// (ErrConflict, also the built-in store's storebackends.ErrConflict),
// an agent deleted under a request (ErrAgentGone) and a full quota of
// pending requests (ErrTooManyPending).
func fromState(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, state.ErrConflict):
		return errors.Join(storebackends.ErrConflict, err)
	case errors.Is(err, state.ErrAgentGone), errors.Is(err, state.ErrTooManyPending):
		return err
	}
	return &stateError{err}
}

// catalogStore keeps the catalog's services in the database.
type catalogStore struct{ db *state.DB }

func (s catalogStore) ListServices(ctx context.Context) ([]catalog.Record, error) {
	rows, err := s.db.ListServices(ctx)
	if err != nil {
		return nil, fromState(err)
	}
	out := make([]catalog.Record, len(rows))
	for i, r := range rows {
		out[i] = catalog.Record{Name: r.Name, Doc: r.Doc, UpdatedAt: r.UpdatedAt}
	}
	return out, nil
}

func (s catalogStore) PutService(ctx context.Context, name string, doc []byte) error {
	return fromState(s.db.PutService(ctx, name, doc))
}

func (s catalogStore) DeleteService(ctx context.Context, name string) (bool, error) {
	found, err := s.db.DeleteService(ctx, name)
	return found, fromState(err)
}

// sessionStore keeps the registry's sessions in the database.
type sessionStore struct{ db *state.DB }

func toSessionRecord(r state.SessionRow) sessions.Record {
	return sessions.Record{
		ID: r.ID, TokenHash: r.TokenHash, Services: r.Services, Placeholders: r.Placeholders, Agent: r.Agent,
		CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, RevokedAt: r.RevokedAt, LastUsed: r.LastUsed, Requests: r.Requests,
		LeaseTimeout: r.LeaseTimeout, LeaseUntil: r.LeaseUntil,
	}
}

// Insert saves a new session. Every failure, a conflict included, is a
// stateError (503, retry): a session's id and token are fresh random
// values, so an existing row means a retried write already landed, and
// minting a new session is the way out; it is never the built-in
// store's version conflict.
func (s sessionStore) Insert(ctx context.Context, r sessions.Record) error {
	err := s.db.InsertSession(ctx, state.SessionRow{
		ID: r.ID, TokenHash: r.TokenHash, Services: r.Services, Placeholders: r.Placeholders, Agent: r.Agent,
		CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, RevokedAt: r.RevokedAt, LastUsed: r.LastUsed, Requests: r.Requests,
		LeaseTimeout: r.LeaseTimeout, LeaseUntil: r.LeaseUntil,
	})
	if err != nil {
		return &stateError{err}
	}
	return nil
}

func (s sessionStore) Revoke(ctx context.Context, id string, at time.Time) (bool, error) {
	found, err := s.db.RevokeSession(ctx, id, at)
	return found, fromState(err)
}

func (s sessionStore) Get(ctx context.Context, id string) (sessions.Record, bool, error) {
	row, ok, err := s.db.Session(ctx, id)
	if err != nil || !ok {
		return sessions.Record{}, false, fromState(err)
	}
	return toSessionRecord(row), true, nil
}

func (s sessionStore) All(ctx context.Context, expiredAfter time.Time) ([]sessions.Record, error) {
	rows, err := s.db.ListSessions(ctx, expiredAfter)
	if err != nil {
		return nil, fromState(err)
	}
	out := make([]sessions.Record, len(rows))
	for i, r := range rows {
		out[i] = toSessionRecord(r)
	}
	return out, nil
}

func (s sessionStore) AddActivity(ctx context.Context, batch []sessions.Activity) error {
	rows := make([]state.SessionActivity, len(batch))
	for i, a := range batch {
		rows[i] = state.SessionActivity{ID: a.ID, Requests: a.Requests, LastUsed: a.LastUsed}
	}
	return fromState(s.db.AddSessionActivity(ctx, rows))
}

func (s sessionStore) DeleteExpiredBefore(ctx context.Context, t time.Time) (int, error) {
	n, err := s.db.DeleteSessionsExpiredBefore(ctx, t)
	return n, fromState(err)
}

// RenewLease writes a session's new lease end; the state package's
// sentinels become the registry's.
func (s sessionStore) RenewLease(ctx context.Context, id string, until time.Time) error {
	found, err := s.db.RenewSessionLease(ctx, id, until)
	switch {
	case errors.Is(err, state.ErrEnded):
		return sessions.ErrEnded
	case errors.Is(err, state.ErrNotLeased):
		return sessions.ErrNotLeased
	case err != nil:
		return &stateError{err}
	case !found:
		return sessions.ErrUnknown
	}
	return nil
}

// builtinRecords keeps one built-in store's header and records in the
// database, under the store's configured name.
type builtinRecords struct {
	db    *state.DB
	store string
}

func (b builtinRecords) Header(ctx context.Context) ([]byte, bool, error) {
	doc, ok, err := b.db.BuiltinHeader(ctx, b.store)
	return doc, ok, fromState(err)
}

func (b builtinRecords) CreateHeader(ctx context.Context, doc []byte) ([]byte, error) {
	stored, err := b.db.CreateBuiltinHeader(ctx, b.store, doc)
	return stored, fromState(err)
}

func (b builtinRecords) List(ctx context.Context) ([]storebackends.Record, error) {
	rows, err := b.db.ListCredentials(ctx, b.store)
	if err != nil {
		return nil, fromState(err)
	}
	out := make([]storebackends.Record, len(rows))
	for i, r := range rows {
		out[i] = storebackends.Record{Name: r.Name, Version: r.Version, UpdatedAt: r.UpdatedAt, Nonce: r.Nonce, Ciphertext: r.Ciphertext}
	}
	return out, nil
}

func toCredentialRow(r storebackends.Record) state.CredentialRow {
	return state.CredentialRow{Name: r.Name, Version: r.Version, UpdatedAt: r.UpdatedAt, Nonce: r.Nonce, Ciphertext: r.Ciphertext}
}

func (b builtinRecords) Put(ctx context.Context, r storebackends.Record) error {
	return fromState(b.db.PutCredential(ctx, b.store, toCredentialRow(r)))
}

func (b builtinRecords) Delete(ctx context.Context, name string) (bool, error) {
	found, err := b.db.DeleteCredential(ctx, b.store, name)
	return found, fromState(err)
}

func (b builtinRecords) Import(ctx context.Context, header []byte, records []storebackends.Record) error {
	rows := make([]state.CredentialRow, len(records))
	for i, r := range records {
		rows[i] = toCredentialRow(r)
	}
	return fromState(b.db.ImportBuiltin(ctx, b.store, header, rows))
}

// Interface guards
var (
	_ catalog.Store                 = catalogStore{}
	_ sessions.Store                = sessionStore{}
	_ storebackends.Records         = builtinRecords{}
	_ storebackends.RecordsImporter = builtinRecords{}
)
