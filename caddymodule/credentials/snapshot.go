package credentials

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Snapshot is an immutable view of every served credential. The proxy
// takes one per request, so the value it sends and the value it scrubs
// from the answer are the same even while a store rotates.
type Snapshot struct {
	values map[string]value
	meta   []storebackends.Meta // sorted by name
	// sources are the credentials that mint tokens; their tokens
	// change within a snapshot's life (Resolve reads the current one).
	sources map[string]*tokensource.Source
}

type value struct {
	v      string
	store  int                  // index of the serving store
	synced storebackends.Synced // nil: the store has no staleness bound
}

// UnavailableError says why a credential cannot be used now. Its text
// names the credential and, for a stale store, the store; never a value.
type UnavailableError struct {
	Name string
	// Err is the store's freshness error, or nil when no store holds
	// the name; for a token source, why no token could be had.
	Err error
	// TokenSource is set when Name mints tokens: Err then names its
	// token endpoint and inputs, for the log and last_error only.
	TokenSource bool
}

// Public is the text for the agent: a token source's cause stays with
// the operator (last_error, the log).
func (e *UnavailableError) Public() string {
	if e.TokenSource {
		return fmt.Sprintf("credential %s cannot be used: its token could not be refreshed", e.Name)
	}
	return e.Error()
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("credential %s is not available", e.Name)
	}
	return fmt.Sprintf("credential %s cannot be used: %v", e.Name, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Lookup is the only way to read a value: it returns the credential's
// value, or an *UnavailableError when no store holds it or its store is
// past its staleness bound at now (fail closed).
func (s *Snapshot) Lookup(name string, now time.Time) (string, error) {
	v, ok := s.values[name]
	if !ok {
		return "", &UnavailableError{Name: name}
	}
	if v.synced != nil {
		if err := v.synced.Fresh(now); err != nil {
			return "", &UnavailableError{Name: name, Err: err}
		}
	}
	return v.v, nil
}

// Resolve is Lookup for the request path: a token source's current
// access token (fetched or refreshed first when needed; ctx bounds the
// wait), or a stored value. Failures are *UnavailableError (503 naming
// the credential).
func (s *Snapshot) Resolve(ctx context.Context, name string, now time.Time) (string, error) {
	if src, ok := s.sources[name]; ok {
		tok, _, err := src.Token(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return "", err
			}
			return "", &UnavailableError{Name: name, Err: err, TokenSource: true}
		}
		return tok, nil
	}
	return s.Lookup(name, now)
}

// Source returns name's token source, when it is one.
func (s *Snapshot) Source(name string) (*tokensource.Source, bool) {
	src, ok := s.sources[name]
	return src, ok
}

// ForScrubbing returns a credential's value whatever its store's
// freshness, for one use only: recognising it in what comes back to an
// agent (a stale value may still be the one an upstream stored). It
// must never be sent; Lookup is for that.
func (s *Snapshot) ForScrubbing(name string) (string, bool) {
	v, ok := s.values[name]
	return v.v, ok
}

// TokensForScrubbing returns a token source's current and previous
// access tokens (none for a stored credential), for recognising them
// in answers only.
func (s *Snapshot) TokensForScrubbing(name string) []string {
	if src, ok := s.sources[name]; ok {
		return src.Current()
	}
	return nil
}

// AllForScrubbing yields every served value, fresh or not, in name
// order, for one use only: keeping them out of text that is not tied to
// one session (the log lines of the standard library's HTTP code).
func (s *Snapshot) AllForScrubbing() iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, m := range s.meta {
			if v, ok := s.values[m.Name]; ok && !yield(v.v) {
				return
			}
		}
		for _, src := range s.sources {
			for _, t := range src.Current() {
				if !yield(t) {
					return
				}
			}
		}
	}
}

// Has reports whether a store serves name (fresh or not) or name is a
// token source.
func (s *Snapshot) Has(name string) bool {
	_, ok := s.values[name]
	_, src := s.sources[name]
	return ok || src
}
