// Package sessions keeps the proxy's short-lived agent sessions: who may
// use the proxy, which services they may reach, and which placeholders
// stand for which credentials. Only token hashes are kept.
//
// The registry is in memory, so authenticating a request never waits
// on I/O. With a Store (the app's state database) sessions are also
// persisted: they survive a restart and are usable on every broker
// sharing the database. Creation is saved before the token is handed
// out; revocation takes effect here first (fail closed) and is then
// saved; other brokers' changes arrive through Apply and Reload.
package sessions

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// TokenPrefix starts every session token, so a leaked one is easy to
// recognise in logs or secret scanners.
const TokenPrefix = "avs_"

// Errors returned by Authenticate. Callers answer all of them with 407
// but log which one it was. Renew returns ErrUnknown for a session it
// does not know.
var (
	ErrUnknown      = errors.New("unknown session token")
	ErrExpired      = errors.New("session expired")
	ErrRevoked      = errors.New("session revoked")
	ErrLeaseExpired = errors.New("session lease expired")
)

// Errors returned by Renew (and by a Store's RenewLease).
var (
	// ErrNotLeased: the session has no lease to renew.
	ErrNotLeased = errors.New("the session has no lease")
	// ErrEnded: the session was revoked, expired or its lease lapsed;
	// it cannot be renewed back to life.
	ErrEnded = errors.New("the session has ended")
)

// Session is one agent run. Its scope, agent and placeholders never
// change after creation; only its activity counters, its lease and its
// revocation do.
type Session struct {
	ID        string
	Services  []string // the services this session may use, fixed at creation
	CreatedAt time.Time
	ExpiresAt time.Time
	// Agent names the agent the session was made for; empty for a
	// session minted with the admin token or an operator's login.
	Agent string
	// LeaseTimeout, when positive, makes the session leased: it ends
	// when not renewed within this long (and at ExpiresAt anyway).
	LeaseTimeout time.Duration

	// leaseUntil is when the lease lapses, unix nanoseconds; only ever
	// moves forward. Unused (0) without a lease.
	leaseUntil atomic.Int64

	tokenHash     [32]byte
	placeholders  map[string]string // credential -> placeholder
	credentials   []string          // the placeholders' keys, sorted
	byPlaceholder map[string]string // placeholder -> credential

	revoked atomic.Bool
	// stored is the request count last read from the store (every
	// broker's flushed requests); pending counts this broker's requests
	// not yet flushed. Without a store everything stays pending.
	stored   atomic.Uint64
	pending  atomic.Uint64
	lastUsed atomic.Int64 // unix nanoseconds
	// seq orders the session's arrival in the registry, so Reload can
	// tell a session added after its read from one missing in the store.
	seq uint64

	mu    sync.Mutex
	conns map[io.Closer]struct{}
}

// Placeholders returns a copy of the credential -> placeholder map.
func (s *Session) Placeholders() map[string]string {
	out := make(map[string]string, len(s.placeholders))
	for k, v := range s.placeholders {
		out[k] = v
	}
	return out
}

// Placeholder returns the placeholder standing for a credential.
func (s *Session) Placeholder(credential string) (string, bool) {
	ph, ok := s.placeholders[credential]
	return ph, ok
}

// Credentials returns the names of the credentials in the session's
// scope (those it holds placeholders for), sorted.
func (s *Session) Credentials() iter.Seq[string] { return slices.Values(s.credentials) }

// Credential returns the credential name a placeholder stands for in
// this session.
func (s *Session) Credential(placeholder string) (string, bool) {
	c, ok := s.byPlaceholder[placeholder]
	return c, ok
}

// InScope reports whether the session may use the named service.
func (s *Session) InScope(service string) bool {
	return slices.Contains(s.Services, service)
}

// Active reports whether the session may still be used at now: not
// revoked, not expired, and its lease (if any) not lapsed.
func (s *Session) Active(now time.Time) bool {
	return !s.revoked.Load() && now.Before(s.ExpiresAt) && !s.leaseLapsed(now)
}

// Leased reports whether the session has a lease.
func (s *Session) Leased() bool { return s.LeaseTimeout > 0 }

// LeaseUntil returns when the session's lease lapses unless renewed;
// false for a session without a lease.
func (s *Session) LeaseUntil() (time.Time, bool) {
	if !s.Leased() {
		return time.Time{}, false
	}
	return time.Unix(0, s.leaseUntil.Load()).UTC(), true
}

// leaseLapsed reports whether the session is leased and its lease
// lapsed at or before now.
func (s *Session) leaseLapsed(now time.Time) bool {
	return s.Leased() && now.UnixNano() >= s.leaseUntil.Load()
}

// extendLease moves the lease's end forward to until (never back).
func (s *Session) extendLease(until time.Time) {
	n := until.UnixNano()
	for {
		old := s.leaseUntil.Load()
		if n <= old || s.leaseUntil.CompareAndSwap(old, n) {
			return
		}
	}
}

// Revoked reports whether the session was revoked.
func (s *Session) Revoked() bool { return s.revoked.Load() }

// Touch records one proxied request. It never does I/O: the count is
// flushed to the store by FlushActivity.
func (s *Session) Touch(now time.Time) {
	s.pending.Add(1)
	s.seeUse(now.UnixNano())
}

// seeUse moves lastUsed forward to n (never back).
func (s *Session) seeUse(n int64) {
	for {
		old := s.lastUsed.Load()
		if n <= old || s.lastUsed.CompareAndSwap(old, n) {
			return
		}
	}
}

// Activity returns the number of proxied requests (on every broker, as
// far as this one knows: the stored count plus its unflushed requests)
// and the time of the last one (zero if none).
func (s *Session) Activity() (requests uint64, lastUsed time.Time) {
	n := s.lastUsed.Load()
	if n != 0 {
		lastUsed = time.Unix(0, n).UTC()
	}
	return s.stored.Load() + s.pending.Load(), lastUsed
}

// Track registers an open connection of this session so that revoking
// or expiring the session closes it. The returned func forgets it. If
// the session is already inactive, c is closed at once.
func (s *Session) Track(c io.Closer) (untrack func()) {
	s.mu.Lock()
	if s.revoked.Load() {
		s.mu.Unlock()
		c.Close()
		return func() {}
	}
	if s.conns == nil {
		s.conns = make(map[io.Closer]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
}

// end marks the session revoked and closes its open connections.
func (s *Session) end() {
	s.revoked.Store(true)
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// closeConns closes the session's open connections and forgets them,
// leaving the session usable; it returns how many there were.
func (s *Session) closeConns() int {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	return len(conns)
}

// Record is a session as the Store keeps it: never the token, only its
// hash.
type Record struct {
	ID           string
	TokenHash    [32]byte
	Services     []string
	Placeholders map[string]string // credential -> placeholder
	Agent        string
	CreatedAt    time.Time
	ExpiresAt    time.Time
	RevokedAt    *time.Time // nil while not revoked
	LastUsed     *time.Time // nil before the first request
	Requests     uint64
	// LeaseTimeout is zero for a session without a lease; LeaseUntil
	// is then nil.
	LeaseTimeout time.Duration
	LeaseUntil   *time.Time
}

// Activity is one session's requests since the last flush.
type Activity struct {
	ID       string
	Requests uint64 // a delta, added to the stored count
	LastUsed time.Time
}

// Store persists sessions (the app implements it over the state
// database). The registry never calls it on a request's path.
type Store interface {
	// Insert saves a new session.
	Insert(ctx context.Context, r Record) error
	// Revoke marks a session revoked at at (keeping an earlier
	// revocation time); it reports whether the session exists.
	Revoke(ctx context.Context, id string, at time.Time) (bool, error)
	// Get returns one session.
	Get(ctx context.Context, id string) (Record, bool, error)
	// All returns every session that expires after expiredAfter.
	All(ctx context.Context, expiredAfter time.Time) ([]Record, error)
	// AddActivity adds request deltas and moves last-used times
	// forward, all in one transaction.
	AddActivity(ctx context.Context, batch []Activity) error
	// DeleteExpiredBefore deletes sessions that expired before t.
	DeleteExpiredBefore(ctx context.Context, t time.Time) (int, error)
	// RenewLease sets the lease end of an unrevoked, leased session to
	// until. It returns ErrUnknown for a session it does not hold,
	// ErrNotLeased for one without a lease and ErrEnded for a revoked
	// one; other errors are the store's.
	RenewLease(ctx context.Context, id string, until time.Time) error
}

// DefaultKeep is how long an ended session stays listed (and stored)
// after its expiry when Registry.Keep is zero.
const DefaultKeep = time.Hour

// purgeEvery is how often Sweep deletes long-expired sessions from the
// store: often enough to keep the table small, rarely enough not to
// write every second.
const purgeEvery = time.Minute

// Registry holds the live sessions. It is safe for concurrent use.
type Registry struct {
	Now func() time.Time // for tests; nil means time.Now
	// Keep is how long an ended session stays listed after its expiry,
	// and in the store; zero means DefaultKeep.
	Keep time.Duration
	// OnLeaseLapsed, if set, is called by Sweep for each session it
	// ends because its lease lapsed, once the lapse is confirmed and
	// just before the session's connections close (the app audits it
	// there, so that the record exists by the time anyone sees the
	// session end). When the store cannot be read it is called after
	// they closed instead: a failing store must not hold them open.
	OnLeaseLapsed func(ctx context.Context, s *Session)

	store Store // nil: sessions live in memory only

	// syncMu serialises the store's reads and activity flushes
	// (Apply, Reload, FlushActivity), so a flushed delta is never
	// counted twice by a read that raced it.
	syncMu    sync.Mutex
	lastPurge time.Time // guarded by syncMu

	mu      sync.RWMutex
	byHash  map[[32]byte]*Session
	byID    map[string]*Session
	nextSeq uint64 // guarded by mu

	// unrecorded are revocations the store failed to record, by id,
	// with their time: RetryRevocations writes them until they land,
	// so other brokers (and this one after a restart) learn of them
	// without the operator having to retry. Kept in memory only.
	revMu      sync.Mutex
	unrecorded map[string]time.Time
}

// NewRegistry returns an empty registry that persists its sessions in
// store; nil keeps them in memory only (they end with the process).
func NewRegistry(store Store) *Registry {
	return &Registry{store: store, byHash: map[[32]byte]*Session{}, byID: map[string]*Session{}}
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Registry) keep() time.Duration {
	if r.Keep > 0 {
		return r.Keep
	}
	return DefaultKeep
}

// NewPlaceholderFunc makes one placeholder; injected so this package
// does not decide the placeholder format.
type NewPlaceholderFunc func() (string, error)

// Spec is what a new session is made of.
type Spec struct {
	// Agent names the agent the session is for; "" for none.
	Agent string
	// Services the session may use; fixed for its life.
	Services []string
	// TTL is how long the session lasts; must be positive.
	TTL time.Duration
	// Credentials get one fresh placeholder each (duplicates once).
	Credentials []string
	// NewPlaceholder makes the placeholders; required when
	// Credentials is not empty.
	NewPlaceholder NewPlaceholderFunc
	// Lease, when positive, makes the session leased: it ends when not
	// renewed (Renew) within Lease. Zero: no lease, TTL semantics only.
	Lease time.Duration
}

// Create opens a session as spec says. It returns the session and its
// bearer token; the token is not kept. With a store, the session is
// saved first: if saving fails there is no session.
func (r *Registry) Create(ctx context.Context, spec Spec) (*Session, string, error) {
	if spec.TTL <= 0 {
		return nil, "", errors.New("session ttl must be positive")
	}
	if spec.Lease < 0 {
		return nil, "", errors.New("session lease must not be negative")
	}
	if len(spec.Credentials) > 0 && spec.NewPlaceholder == nil {
		return nil, "", errors.New("session spec has credentials but no placeholder maker")
	}
	secret := make([]byte, 32) // 256 bits
	if _, err := rand.Read(secret); err != nil {
		return nil, "", err
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	idBytes := make([]byte, 12)
	if _, err := rand.Read(idBytes); err != nil {
		return nil, "", err
	}
	now := r.now().UTC()
	placeholders := make(map[string]string, len(spec.Credentials))
	for _, c := range spec.Credentials {
		if _, dup := placeholders[c]; dup {
			continue
		}
		ph, err := spec.NewPlaceholder()
		if err != nil {
			return nil, "", err
		}
		placeholders[c] = ph
	}
	rec := Record{
		ID:           "ses_" + hex.EncodeToString(idBytes),
		TokenHash:    sha256.Sum256([]byte(token)),
		Services:     slices.Clone(spec.Services),
		Placeholders: placeholders,
		Agent:        spec.Agent,
		CreatedAt:    now,
		ExpiresAt:    now.Add(spec.TTL),
	}
	if rec.Services == nil {
		rec.Services = []string{}
	}
	if spec.Lease > 0 {
		until := now.Add(spec.Lease)
		rec.LeaseTimeout, rec.LeaseUntil = spec.Lease, &until
	}
	sort.Strings(rec.Services)
	if r.store != nil {
		if err := r.store.Insert(ctx, rec); err != nil {
			return nil, "", fmt.Errorf("saving the session: %w", err)
		}
	}
	// The change feed may have added it already (Apply): keep that one.
	return r.add(newSession(rec)), token, nil
}

// newSession builds the in-memory session for a record.
func newSession(rec Record) *Session {
	s := &Session{
		ID:            rec.ID,
		Services:      slices.Clone(rec.Services),
		CreatedAt:     rec.CreatedAt,
		ExpiresAt:     rec.ExpiresAt,
		Agent:         rec.Agent,
		LeaseTimeout:  rec.LeaseTimeout,
		tokenHash:     rec.TokenHash,
		placeholders:  make(map[string]string, len(rec.Placeholders)),
		byPlaceholder: make(map[string]string, len(rec.Placeholders)),
	}
	sort.Strings(s.Services)
	for c, ph := range rec.Placeholders {
		s.placeholders[c] = ph
		s.byPlaceholder[ph] = c
		s.credentials = append(s.credentials, c)
	}
	sort.Strings(s.credentials)
	s.applyStored(rec)
	return s
}

// applyStored takes the stored activity, lease and revocation of rec.
// Revocation only ever goes one way, and the lease only forward (a
// read that raced a renewal here must not shorten it).
func (s *Session) applyStored(rec Record) {
	s.stored.Store(rec.Requests)
	if rec.LastUsed != nil {
		s.seeUse(rec.LastUsed.UnixNano())
	}
	if s.Leased() && rec.LeaseUntil != nil {
		s.extendLease(*rec.LeaseUntil)
	}
	if rec.RevokedAt != nil {
		s.end()
	}
}

// add puts s in the registry unless a session with its id is there
// already, and returns the one that is.
func (r *Registry) add(s *Session) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byID[s.ID]; ok {
		return old
	}
	r.nextSeq++
	s.seq = r.nextSeq
	r.byHash[s.tokenHash] = s
	r.byID[s.ID] = s
	return s
}

// Authenticate returns the active session for token. It never does I/O.
func (r *Registry) Authenticate(token string) (*Session, error) {
	h := sha256.Sum256([]byte(token))
	r.mu.RLock()
	s := r.byHash[h]
	r.mu.RUnlock()
	switch {
	case s == nil:
		return nil, ErrUnknown
	case s.revoked.Load():
		return nil, ErrRevoked
	}
	now := r.now()
	switch {
	case !now.Before(s.ExpiresAt):
		return nil, ErrExpired
	case s.leaseLapsed(now):
		return nil, ErrLeaseExpired
	}
	return s, nil
}

// Get returns the session with the given id, ended or not, if this
// registry holds it.
func (r *Registry) Get(id string) (*Session, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.byID[id]
	return s, ok
}

// Lookup returns the session with the given id: this registry's, or
// with a store, the store's (a session made on another broker that the
// change feed has not brought yet). An error is the store's.
func (r *Registry) Lookup(ctx context.Context, id string) (*Session, bool, error) {
	if s, ok := r.Get(id); ok || r.store == nil {
		return s, ok, nil
	}
	if err := r.Apply(ctx, id); err != nil {
		return nil, false, err
	}
	s, ok := r.Get(id)
	return s, ok, nil
}

// Renew extends a leased session's lease to now + its LeaseTimeout and
// returns the new end. The store is written first (so every broker,
// and this one after a restart, sees it), then the session here. It
// returns ErrUnknown for a session neither here nor in the store,
// ErrNotLeased for a session without a lease, and ErrEnded for one
// revoked, expired or whose lease lapsed: a lapsed lease is never
// revived, even before the sweeper has ended it.
func (r *Registry) Renew(ctx context.Context, id string) (time.Time, error) {
	s, ok, err := r.Lookup(ctx, id)
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return time.Time{}, ErrUnknown
	}
	now := r.now()
	switch {
	case !s.Leased():
		return time.Time{}, ErrNotLeased
	case !s.Active(now):
		return time.Time{}, ErrEnded
	}
	until := now.UTC().Add(s.LeaseTimeout)
	if r.store != nil {
		if err := r.store.RenewLease(ctx, id, until); err != nil {
			if errors.Is(err, ErrEnded) || errors.Is(err, ErrUnknown) {
				// Ended or gone in the store: end it here too.
				s.end()
				return time.Time{}, ErrEnded
			}
			return time.Time{}, fmt.Errorf("saving the lease: %w", err)
		}
	}
	s.extendLease(until)
	if s.Revoked() {
		// Ended while the renewal was being written (the sweeper, a
		// revocation): the renewal does not bring it back.
		return time.Time{}, ErrEnded
	}
	return until, nil
}

// Revoke ends the session with the given id and closes its open
// connections, then records the revocation in the store. It reports
// whether the session existed (here or in the store). The session has
// ended here even when an error is returned: the error means other
// brokers may not know yet, and revoking again is safe.
func (r *Registry) Revoke(ctx context.Context, id string) (bool, error) {
	r.mu.RLock()
	s, ok := r.byID[id]
	r.mu.RUnlock()
	if ok {
		s.end()
	}
	if r.store == nil {
		return ok, nil
	}
	at := r.now().UTC()
	stored, err := r.store.Revoke(ctx, id, at)
	if err != nil {
		if ok {
			// Known here, so it must become known everywhere: retried
			// until it lands. (An id unknown here and to the store
			// may be a typo; the caller sees the error.)
			r.queueRevocation(id, at)
		}
		return ok, fmt.Errorf("recording the revocation: %w", err)
	}
	r.revMu.Lock()
	delete(r.unrecorded, id)
	r.revMu.Unlock()
	return ok || stored, nil
}

// RetryRevocations records in the store the revocations Revoke could
// not (the app's sweeper calls it every second). Those that fail again
// stay for the next call; the error is the store's.
func (r *Registry) RetryRevocations(ctx context.Context) error {
	if r.store == nil {
		return nil
	}
	r.revMu.Lock()
	todo := maps.Clone(r.unrecorded)
	r.revMu.Unlock()
	var errs []error
	for id, at := range todo {
		if _, err := r.store.Revoke(ctx, id, at); err != nil {
			errs = append(errs, fmt.Errorf("recording the revocation of %s: %w", id, err))
			continue
		}
		r.revMu.Lock()
		delete(r.unrecorded, id)
		r.revMu.Unlock()
	}
	return errors.Join(errs...)
}

// Unrecorded returns how many revocations wait to be recorded in the
// store.
func (r *Registry) Unrecorded() int {
	r.revMu.Lock()
	defer r.revMu.Unlock()
	return len(r.unrecorded)
}

// Apply brings one session in line with the store (the change feed
// names it): a session created elsewhere is added, a revoked one ends,
// and one the store no longer holds ends too (fail closed).
func (r *Registry) Apply(ctx context.Context, id string) error {
	if r.store == nil {
		return nil
	}
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	rec, ok, err := r.store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("reading session %s: %w", id, err)
	}
	r.mu.RLock()
	s, have := r.byID[id]
	r.mu.RUnlock()
	switch {
	case !ok && have:
		s.end()
	case ok && have:
		s.applyStored(rec)
	case ok && r.now().Before(rec.ExpiresAt.Add(r.keep())):
		r.add(newSession(rec)).applyStored(rec)
	}
	return nil
}

// Reload brings every session in line with the store (the change
// feed's periodic safety net, and after a reconnect): it adds sessions
// created elsewhere, ends revoked ones, and ends sessions the store no
// longer holds (fail closed). Nothing is ever un-revoked.
func (r *Registry) Reload(ctx context.Context) error {
	if r.store == nil {
		return nil
	}
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	// Sessions added after this point were saved after the read began,
	// so their absence from it means nothing.
	r.mu.RLock()
	seen := r.nextSeq
	r.mu.RUnlock()
	since := r.now().Add(-r.keep())
	recs, err := r.store.All(ctx, since)
	if err != nil {
		return fmt.Errorf("reading sessions: %w", err)
	}
	inStore := make(map[string]bool, len(recs))
	for _, rec := range recs {
		inStore[rec.ID] = true
		r.add(newSession(rec)).applyStored(rec)
	}
	var gone []*Session
	r.mu.RLock()
	for id, s := range r.byID {
		if !inStore[id] && s.seq <= seen && s.ExpiresAt.After(since) {
			gone = append(gone, s)
		}
	}
	r.mu.RUnlock()
	for _, s := range gone {
		s.end()
	}
	return nil
}

// FlushActivity writes every session's requests since the last flush
// to the store in one batch (the app calls it every second). If the
// write fails the requests are kept and go out with the next flush,
// except when ctx ended during it: then the batch may have been
// committed just as the deadline passed, and sending it again could
// count those requests twice, so they are dropped. Counts are for
// display; losing a second's worth now and then is better than
// inflating them.
func (r *Registry) FlushActivity(ctx context.Context) error {
	if r.store == nil {
		return nil
	}
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	type taken struct {
		s *Session
		n uint64
	}
	var batch []Activity
	var took []taken
	r.mu.RLock()
	for _, s := range r.byID {
		n := s.pending.Swap(0)
		if n == 0 {
			continue
		}
		took = append(took, taken{s, n})
		_, last := s.Activity()
		batch = append(batch, Activity{ID: s.ID, Requests: n, LastUsed: last})
	}
	r.mu.RUnlock()
	if len(batch) == 0 {
		return nil
	}
	if err := r.store.AddActivity(ctx, batch); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("saving session activity: %w (the batch may have been saved; its requests are not sent again)", err)
		}
		for _, t := range took {
			t.s.pending.Add(t.n)
		}
		return fmt.Errorf("saving session activity: %w", err)
	}
	for _, t := range took {
		t.s.stored.Add(t.n)
	}
	return nil
}

// List returns all known sessions, newest first.
func (r *Registry) List() []*Session {
	r.mu.RLock()
	out := make([]*Session, 0, len(r.byID))
	for _, s := range r.byID {
		out = append(out, s)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// SweepResult is what one Sweep did.
type SweepResult struct {
	// Expired counts the sessions that reached their expiry and ended.
	Expired int
	// LeaseLapsed counts the sessions whose lease lapsed and that this
	// sweep ended and revoked in the store. A session another broker
	// had revoked already is ended here but not counted. Each is also
	// handed to OnLeaseLapsed, the one place that acts on a lapse
	// (the app audits it there).
	LeaseLapsed int
}

// Sweep ends sessions that expired or whose lease lapsed (closing
// their open connections) and forgets sessions whose expiry time is
// more than Keep ago (revoked ones included: they stay listed until
// then), so the list shows recent activity without growing forever.
//
// A lapsed lease is also revoked in the store, so every broker learns
// that the session ended. Before that the store is asked whether
// another broker renewed the lease (its change may not have arrived
// yet); if so the session lives on. If the store cannot be read the
// session ends anyway (fail closed) and its revocation is retried
// (RetryRevocations).
//
// With a store it also deletes long-expired sessions from the store,
// at most once a minute. An error is the store's.
func (r *Registry) Sweep(ctx context.Context) (SweepResult, error) {
	now := r.now()
	horizon := now.Add(-r.keep())
	var expired, lapsed []*Session
	r.mu.Lock()
	for id, s := range r.byID {
		switch {
		case s.revoked.Load():
		case !now.Before(s.ExpiresAt):
			expired = append(expired, s)
		case s.leaseLapsed(now):
			lapsed = append(lapsed, s)
		}
		if !s.ExpiresAt.After(horizon) {
			delete(r.byID, id)
			delete(r.byHash, s.tokenHash)
		}
	}
	r.mu.Unlock()
	for _, s := range expired {
		s.end()
	}
	res := SweepResult{Expired: len(expired)}
	var errs []error
	for _, s := range lapsed {
		ended, err := r.endLapsed(ctx, s, now)
		if err != nil {
			errs = append(errs, err)
		}
		if ended {
			res.LeaseLapsed++
		}
	}
	if r.store == nil {
		return res, errors.Join(errs...)
	}
	r.syncMu.Lock()
	due := now.Sub(r.lastPurge) >= purgeEvery
	if due {
		r.lastPurge = now
	}
	r.syncMu.Unlock()
	if due {
		if _, err := r.store.DeleteExpiredBefore(ctx, horizon); err != nil {
			errs = append(errs, fmt.Errorf("deleting expired sessions: %w", err))
		}
	}
	return res, errors.Join(errs...)
}

// endLapsed ends a session whose lease lapsed here, unless the store
// shows a renewal this broker has not seen. It reports whether this
// call ended it (false: renewed elsewhere, or revoked elsewhere first).
func (r *Registry) endLapsed(ctx context.Context, s *Session, now time.Time) (bool, error) {
	lapsed := func() {
		if r.OnLeaseLapsed != nil {
			r.OnLeaseLapsed(ctx, s)
		}
	}
	if r.store == nil {
		lapsed()
		s.end()
		return true, nil
	}
	rec, ok, err := r.store.Get(ctx, s.ID)
	if err == nil && ok {
		if rec.RevokedAt == nil && rec.LeaseUntil != nil && now.Before(*rec.LeaseUntil) {
			s.extendLease(*rec.LeaseUntil)
			return false, nil
		}
		if rec.RevokedAt != nil {
			s.end()
			return false, nil
		}
	}
	if err != nil {
		s.end()
		lapsed()
		r.queueRevocation(s.ID, now.UTC())
		return true, fmt.Errorf("reading session %s before ending its lapsed lease: %w", s.ID, err)
	}
	lapsed()
	s.end()
	if !ok {
		return true, nil // the store no longer holds it: nothing to record
	}
	if _, err := r.store.Revoke(ctx, s.ID, now.UTC()); err != nil {
		r.queueRevocation(s.ID, now.UTC())
		return true, fmt.Errorf("recording the end of session %s's lease: %w", s.ID, err)
	}
	return true, nil
}

// queueRevocation keeps a revocation the store did not record for
// RetryRevocations.
func (r *Registry) queueRevocation(id string, at time.Time) {
	r.revMu.Lock()
	defer r.revMu.Unlock()
	if r.unrecorded == nil {
		r.unrecorded = map[string]time.Time{}
	}
	if _, dup := r.unrecorded[id]; !dup {
		r.unrecorded[id] = at
	}
}

// ByAgent returns the sessions of the named agent this registry holds,
// ended ones included, newest first.
func (r *Registry) ByAgent(agent string) []*Session {
	var out []*Session
	for _, s := range r.List() {
		if s.Agent == agent {
			out = append(out, s)
		}
	}
	return out
}

// EndAgent ends every session of the named agent here, closing their
// connections, without writing to the store: for after the store
// revoked them itself (deleting the agent revokes its sessions in the
// same transaction), so this broker's tunnels close at once rather
// than when the change feed delivers. It returns the ids it ended.
func (r *Registry) EndAgent(agent string) []string {
	var ids []string
	for _, s := range r.ByAgent(agent) {
		if !s.Revoked() {
			ids = append(ids, s.ID)
		}
		s.end()
	}
	return ids
}

// CloseConnections closes every session's open connections (tunnels,
// relays, streaming requests) without ending any session: when this
// broker can no longer trust its copy of the sessions (the state
// database is unreachable), a stream opened before must not go on, but
// the agents may reconnect, and are served again once it is back. It
// returns how many connections it closed.
func (r *Registry) CloseConnections() int {
	r.mu.RLock()
	all := make([]*Session, 0, len(r.byID))
	for _, s := range r.byID {
		all = append(all, s)
	}
	r.mu.RUnlock()
	n := 0
	for _, s := range all {
		n += s.closeConns()
	}
	return n
}

// RevokeAll ends every session in this process, closing their
// connections; used when the app stops. The store is not told: the
// sessions live on for the next start and the other brokers.
func (r *Registry) RevokeAll() {
	r.mu.RLock()
	all := make([]*Session, 0, len(r.byID))
	for _, s := range r.byID {
		all = append(all, s)
	}
	r.mu.RUnlock()
	for _, s := range all {
		s.end()
	}
}
