// Package sessions keeps the proxy's short-lived agent sessions: who may
// use the proxy, which services they may reach, and which placeholders
// stand for which credentials. Only token hashes are kept.
package sessions

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"iter"
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
// but log which one it was.
var (
	ErrUnknown = errors.New("unknown session token")
	ErrExpired = errors.New("session expired")
	ErrRevoked = errors.New("session revoked")
)

// Session is one agent run. Its scope and placeholders never change
// after creation; only its activity counters and revocation do.
type Session struct {
	ID        string
	Services  []string // the services this session may use, fixed at creation
	CreatedAt time.Time
	ExpiresAt time.Time

	tokenHash     [32]byte
	placeholders  map[string]string // credential -> placeholder
	credentials   []string          // the placeholders' keys, sorted
	byPlaceholder map[string]string // placeholder -> credential

	revoked  atomic.Bool
	requests atomic.Uint64
	lastUsed atomic.Int64 // unix nanoseconds

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

// Active reports whether the session may still be used at now.
func (s *Session) Active(now time.Time) bool {
	return !s.revoked.Load() && now.Before(s.ExpiresAt)
}

// Revoked reports whether the session was revoked.
func (s *Session) Revoked() bool { return s.revoked.Load() }

// Touch records one proxied request.
func (s *Session) Touch(now time.Time) {
	s.requests.Add(1)
	s.lastUsed.Store(now.UnixNano())
}

// Activity returns the number of proxied requests and the time of the
// last one (zero if none).
func (s *Session) Activity() (requests uint64, lastUsed time.Time) {
	n := s.lastUsed.Load()
	if n != 0 {
		lastUsed = time.Unix(0, n).UTC()
	}
	return s.requests.Load(), lastUsed
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

// Registry holds the live sessions. It is safe for concurrent use.
type Registry struct {
	Now func() time.Time // for tests; nil means time.Now

	mu     sync.RWMutex
	byHash map[[32]byte]*Session
	byID   map[string]*Session
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byHash: map[[32]byte]*Session{}, byID: map[string]*Session{}}
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// NewPlaceholderFunc makes one placeholder; injected so this package
// does not decide the placeholder format.
type NewPlaceholderFunc func() (string, error)

// Create opens a session for the named services lasting ttl, with one
// fresh placeholder per credential. It returns the session and its
// bearer token; the token is not kept.
func (r *Registry) Create(services []string, ttl time.Duration, credentials []string, newPlaceholder NewPlaceholderFunc) (*Session, string, error) {
	if ttl <= 0 {
		return nil, "", errors.New("session ttl must be positive")
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
	s := &Session{
		ID:            "ses_" + hex.EncodeToString(idBytes),
		CreatedAt:     now,
		ExpiresAt:     now.Add(ttl),
		tokenHash:     sha256.Sum256([]byte(token)),
		placeholders:  make(map[string]string, len(credentials)),
		byPlaceholder: make(map[string]string, len(credentials)),
	}
	s.Services = slices.Clone(services)
	sort.Strings(s.Services)
	for _, c := range credentials {
		if _, dup := s.placeholders[c]; dup {
			continue
		}
		ph, err := newPlaceholder()
		if err != nil {
			return nil, "", err
		}
		s.placeholders[c] = ph
		s.byPlaceholder[ph] = c
		s.credentials = append(s.credentials, c)
	}
	sort.Strings(s.credentials)
	r.mu.Lock()
	r.byHash[s.tokenHash] = s
	r.byID[s.ID] = s
	r.mu.Unlock()
	return s, token, nil
}

// Authenticate returns the active session for token.
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
	case !r.now().Before(s.ExpiresAt):
		return nil, ErrExpired
	}
	return s, nil
}

// Revoke ends the session with the given id and closes its open
// connections. It reports whether the session existed.
func (r *Registry) Revoke(id string) bool {
	r.mu.RLock()
	s, ok := r.byID[id]
	r.mu.RUnlock()
	if !ok {
		return false
	}
	s.end()
	return true
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

// Sweep ends sessions that expired (closing their open connections) and
// forgets sessions whose expiry time is more than keep ago (revoked ones
// included: they stay listed until then), so the list shows
// recent activity without growing forever. It returns how many sessions
// it ended.
func (r *Registry) Sweep(keep time.Duration) int {
	now := r.now()
	var ended []*Session
	r.mu.Lock()
	for id, s := range r.byID {
		if !now.Before(s.ExpiresAt) && !s.revoked.Load() {
			ended = append(ended, s)
		}
		if !now.Before(s.ExpiresAt.Add(keep)) {
			delete(r.byID, id)
			delete(r.byHash, s.tokenHash)
		}
	}
	r.mu.Unlock()
	for _, s := range ended {
		s.end()
	}
	return len(ended)
}

// RevokeAll ends every session; used when the app stops.
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
