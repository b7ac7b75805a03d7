package tokensource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Timing of a Source.
const (
	// RefreshAt is the share of a token's lifetime after which it is
	// refreshed (it is still served while the refresh fails).
	RefreshAt = 0.8
	// FetchTimeout bounds one call of a token endpoint.
	FetchTimeout = 30 * time.Second
	// ExclusiveWait bounds how long a fetch waits (Env.Exclusive) for
	// another one presenting the same refresh token.
	ExclusiveWait = 20 * time.Second
	// RetryAfterFailure is how long a failed fetch is not repeated while
	// the old token is still valid (so a down endpoint is not hammered by
	// every request between 80% and expiry).
	RetryAfterFailure = 2 * time.Second
	// MinStaleAge is how old a token that replaced a rejected one must
	// be before an upstream's 401 makes it stale too; each further
	// rejected replacement doubles it, up to MaxStaleAge. The first 401
	// after a scheduled fetch refreshes at once. So an upstream that
	// rejects every request (a wrong scope, a revoked grant) costs a
	// handful of token fetches, not one per request.
	MinStaleAge = 30 * time.Second
	MaxStaleAge = 15 * time.Minute
)

// Env is what a Source needs from the broker.
type Env struct {
	// Client calls the token endpoints: the stores' hardened client (no
	// proxy, no redirects, verified TLS, capped bodies) dialing through
	// the egress policy. Required.
	Client *http.Client
	// Lookup reads one input credential's current value (freshness
	// applied). Required.
	Lookup func(name string) (string, error)
	// SaveRefreshToken keeps a rotated refresh token for credential
	// name; nil keeps it nowhere (the next restart uses the stored one).
	SaveRefreshToken func(ctx context.Context, name, value string) error
	// Exclusive runs one fetch (the endpoint call and the keeping of a
	// rotated refresh token) while no other fetch presents the same
	// refresh token, in this process or another broker; an error it
	// returns is the fetch's. nil runs the fetch directly.
	Exclusive func(ctx context.Context, fetch func() error) error
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Defined is when the operator defined the source (listings).
	Defined time.Time
}

// ErrExpired is a Source's error once its token is past its expiry (or
// rejected upstream) and no new one could be had; it wraps the cause.
var ErrExpired = errors.New("no valid access token")

// Status is a Source's metadata for the API: never the token.
type Status struct {
	Kind        string
	ExpiresAt   time.Time // zero: no token yet
	LastRefresh time.Time // zero: never fetched
	LastError   string    // "" when the last fetch worked
}

// Source is one credential that mints tokens. It is safe for
// concurrent use.
type Source struct {
	name string
	spec Spec
	env  Env

	mu     sync.Mutex
	token  string
	recent []string // up to RecentTokens tokens before the current one, newest first, for scrubbing
	// scrubUntil is when the last token scrubbed (current or recent)
	// expires.
	scrubUntil time.Time
	issued     time.Time
	expiry     time.Time
	stale      bool
	lastFetch  time.Time
	lastErr    error
	saveFailed bool // lastErr is SaveRefreshToken's
	failedAt   time.Time
	flight     *flight
	streak     int // tokens in a row fetched because the one before was rejected
}

type flight struct {
	done chan struct{}
	err  error
}

// New returns a Source for credential name; spec must have validated.
func New(name string, spec Spec, env Env) (*Source, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if env.Client == nil || env.Lookup == nil {
		return nil, errors.New("tokensource: Env needs Client and Lookup")
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	return &Source{name: name, spec: spec, env: env}, nil
}

// Name is the credential's name.
func (s *Source) Name() string { return s.name }

// Defined is when the operator defined the source.
func (s *Source) Defined() time.Time { return s.env.Defined }

// Spec is the Source's definition.
func (s *Source) Spec() Spec { return s.spec }

// Token returns a valid access token and its expiry, fetching one
// first when there is none, it is past 80% of its lifetime, or it was
// marked stale. Concurrent callers share one fetch. Past expiry with no
// new token it returns an error wrapping ErrExpired.
func (s *Source) Token(ctx context.Context) (string, time.Time, error) {
	s.mu.Lock()
	now := s.env.Now()
	if s.valid(now) {
		// Past 80%: refresh in the background; the token still serves.
		if !now.Before(s.refreshAt()) && s.flight == nil && now.Sub(s.failedAt) >= RetryAfterFailure {
			s.streak = 0
			s.startLocked(ctx)
		}
		tok, exp := s.token, s.expiry
		s.mu.Unlock()
		return tok, exp, nil
	}
	f := s.flight
	if f == nil {
		if s.lastErr != nil && !s.failedAt.IsZero() && now.Sub(s.failedAt) < RetryAfterFailure {
			// Expired and the last try just failed: fail closed now.
			err := s.lastErr
			s.mu.Unlock()
			return "", time.Time{}, fmt.Errorf("%w: %v", ErrExpired, err)
		}
		if !s.stale {
			s.streak = 0
		}
		f = s.startLocked(ctx)
	}
	s.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return "", time.Time{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.valid(s.env.Now()) {
		return s.token, s.expiry, nil
	}
	err := f.err
	if err == nil {
		err = errors.New("the token endpoint answered with a token that had already expired")
	}
	return "", time.Time{}, fmt.Errorf("%w: %v", ErrExpired, err)
}

// valid reports whether the current token may be sent (s.mu held).
func (s *Source) valid(now time.Time) bool {
	return s.token != "" && !s.stale && now.Before(s.expiry)
}

// startLocked starts the one fetch in flight (s.mu held).
func (s *Source) startLocked(ctx context.Context) *flight {
	f := &flight{done: make(chan struct{})}
	s.flight = f
	go s.fetch(ctx, f)
	return f
}

// refreshAt is when the current token is refreshed (s.mu held).
func (s *Source) refreshAt() time.Time {
	life := s.expiry.Sub(s.issued)
	return s.issued.Add(time.Duration(float64(life) * RefreshAt))
}

// fetch runs one fetch for every waiter: detached from the caller's
// cancellation (others wait on it too), bounded by FetchTimeout.
func (s *Source) fetch(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FetchTimeout+ExclusiveWait)
	defer cancel()
	start := s.env.Now()
	var got Fetched
	var saveErr error
	one := func() error {
		ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
		defer cancel()
		var err error
		start = s.env.Now()
		if s.spec.Kind == KindGitHubApp {
			got, err = fetchGitHub(ctx, &s.env, s.spec, start)
		} else {
			got, err = fetchOAuth(ctx, &s.env, s.spec, start)
		}
		if err == nil && got.RefreshToken != "" && s.env.SaveRefreshToken != nil {
			// The old refresh token may be dead now: failing to keep the
			// new one is reported, but the access token is still good.
			if serr := s.env.SaveRefreshToken(ctx, s.spec.RefreshToken, got.RefreshToken); serr != nil {
				saveErr = fmt.Errorf("the rotated refresh token could not be kept: %v", serr)
			}
		}
		return err
	}
	var err error
	if s.env.Exclusive != nil {
		err = s.env.Exclusive(ctx, one)
	} else {
		err = one()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastFetch = start
	f.err = err
	if err != nil {
		s.lastErr, s.failedAt, s.saveFailed = err, start, false
	} else {
		if s.token != "" && s.token != got.Token {
			s.recent = append([]string{s.token}, s.recent[:min(len(s.recent), RecentTokens-1)]...)
		}
		s.token, s.issued, s.expiry, s.stale = got.Token, start, got.Expiry, false
		if got.Expiry.After(s.scrubUntil) {
			s.scrubUntil = got.Expiry
		}
		s.lastErr, s.failedAt, s.saveFailed = saveErr, time.Time{}, saveErr != nil
	}
	s.flight = nil
	close(f.done)
}

// MarkStale says that an upstream rejected used (401): if it is still
// the current token, the next Token call fetches a new one first. A
// token already replaced is not marked again, so a burst of 401s
// causes one refresh; a token that itself replaced a rejected one is
// marked only once it is staleAge old (MinStaleAge, doubling).
func (s *Source) MarkStale(used string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if used == "" || used != s.token || s.stale || s.env.Now().Sub(s.issued) < staleAge(s.streak) {
		return false
	}
	s.streak++
	s.stale = true
	s.failedAt = time.Time{}
	return true
}

// MarkAccepted says that an upstream answered a request that carried
// used with something other than 401: if it is the current token, the
// rejection streak ends, so the next 401 refreshes at once again.
func (s *Source) MarkAccepted(used string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if used != "" && used == s.token && !s.stale {
		s.streak = 0
	}
}

// Inherit makes the tokens old still scrubs (its current one and its
// ring) this Source's ring, newest first and capped at RecentTokens, so
// that a redefinition does not stop scrubbing tokens an upstream may
// still echo. Call it before the Source serves.
func (s *Source) Inherit(old *Source) {
	if old == nil || old == s {
		return
	}
	prev, until := old.Current(), old.ScrubUntil()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recent = append(s.recent, prev...)
	s.recent = s.recent[:min(len(s.recent), RecentTokens)]
	if until.After(s.scrubUntil) {
		s.scrubUntil = until
	}
}

// ScrubUntil is when the last of the tokens Current returns expires
// (zero: none was ever fetched).
func (s *Source) ScrubUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scrubUntil
}

// Saved says that a rotated refresh token SaveRefreshToken failed to
// keep was kept later (a retry in the background): the error it left
// in Status goes.
func (s *Source) Saved() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveFailed {
		s.lastErr, s.saveFailed = nil, false
	}
}

// staleAge is the age a token must reach before a 401 makes it stale,
// after streak rejected tokens in a row.
func staleAge(streak int) time.Duration {
	if streak == 0 {
		return 0
	}
	d := MinStaleAge
	for i := 1; i < streak && d < MaxStaleAge; i++ {
		d *= 2
	}
	return min(d, MaxStaleAge)
}

// RecentTokens is how many replaced tokens a Source still scrubs from
// answers (an upstream may echo a token it was sent a while ago).
const RecentTokens = 4

// Current returns the tokens to recognise in answers (the current one
// and up to RecentTokens before it, newest first), for scrubbing only;
// never to send.
func (s *Source) Current() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if s.token != "" {
		out = append(out, s.token)
	}
	return append(out, s.recent...)
}

// Status describes the Source for the API.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Kind: s.spec.Kind, LastRefresh: s.lastFetch}
	if s.token != "" {
		st.ExpiresAt = s.expiry
	}
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	return st
}
