package infisical

import (
	"context"
	"errors"
	"math"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// session is the access token in use. Its lifecycle is driven lazily
// from CheckLogin and Fetch (the sync engine polls often enough), so
// no goroutine is needed.
type session struct {
	token     string
	ttl       time.Duration // lifetime granted at login; 0 = never expires
	expiresAt time.Time     // meaningful only when ttl > 0
	maxAt     time.Time     // no renewal reaches past it; zero = no max TTL
}

// due reports whether less than a third of the token's lifetime is
// left, the point where it is renewed or replaced.
func (s session) due(now time.Time) bool { return s.ttl > 0 && s.expiresAt.Sub(now) < s.ttl/3 }

// renewable reports whether a renewal could still grant a full
// lifetime; past that, logging in again gives a fresh max TTL.
func (s session) renewable(now time.Time) bool { return s.maxAt.IsZero() || s.maxAt.Sub(now) >= s.ttl }

// tokenResponse is the answer of universal auth login and of renew.
type tokenResponse struct {
	AccessToken       string  `json:"accessToken"`
	ExpiresIn         float64 `json:"expiresIn"`         // seconds
	AccessTokenMaxTTL float64 `json:"accessTokenMaxTTL"` // seconds
	TokenType         string  `json:"tokenType"`
}

// CheckLogin verifies the credentials with Infisical: universal auth
// logs in; token auth lists the configured folder (without imports or
// subfolders), which needs a valid token with access to it. Errors name
// the problem and never contain the token or the client secret.
func (f *Fetcher) CheckLogin(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	if f.cfg.AuthMethod == AuthUniversal {
		return f.login(ctx)
	}
	var out listResponse
	return f.list(ctx, false, false, &out)
}

// ensureSession makes sure a token usable for the coming requests is
// held. The caller holds f.mu.
func (f *Fetcher) ensureSession(ctx context.Context) error {
	if f.cfg.AuthMethod != AuthUniversal {
		return nil
	}
	now := f.now()
	switch {
	case f.session.token == "":
		return f.login(ctx)
	case !f.session.due(now):
		return nil
	case !f.session.renewable(now):
		f.log.Info("infisical access token is near its max TTL; logging in again", f.storeField())
		return f.login(ctx)
	}
	if err := f.renew(ctx, now); err != nil {
		f.log.Info("renewing the infisical access token failed; logging in again", f.storeField(), zap.String("error", err.Error()))
		if lerr := f.login(ctx); lerr != nil {
			// A short outage of the auth endpoints must not fail syncs
			// while the token in hand is still valid.
			if f.session.token != "" && now.Before(f.session.expiresAt) {
				f.log.Warn("infisical login failed; keeping the current access token until it expires", f.storeField(),
					zap.String("error", lerr.Error()), zap.Duration("expires_in", f.session.expiresAt.Sub(now)))
				return nil
			}
			return lerr
		}
	}
	return nil
}

// login obtains a fresh token with the universal auth credentials.
func (f *Fetcher) login(ctx context.Context) error {
	const op = "infisical universal auth login failed"
	start := f.now()
	var out tokenResponse
	err := f.call(ctx, op, http.MethodPost, "/api/v1/auth/universal-auth/login", nil,
		map[string]string{"clientId": f.cfg.ClientID, "clientSecret": f.cfg.ClientSecret}, "", &out)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && (ae.status == http.StatusUnauthorized || ae.status == http.StatusForbidden) {
			ae.reason += "; check client_id and client_secret"
		}
		return err
	}
	if err := checkToken(op, out); err != nil {
		return err
	}
	// The old session is replaced only now, with a working token.
	next := session{token: out.AccessToken}
	if ttl := seconds(out.ExpiresIn); ttl > 0 {
		next.ttl = ttl
		next.expiresAt = start.Add(ttl)
	}
	if maxTTL := seconds(out.AccessTokenMaxTTL); maxTTL > 0 {
		next.maxAt = start.Add(maxTTL)
	}
	f.session = next
	f.log.Info("infisical universal auth login", f.storeField(),
		zap.Duration("expires_in", f.session.ttl), zap.Duration("max_ttl", seconds(out.AccessTokenMaxTTL)))
	return nil
}

// renew extends the token's lifetime (POST /api/v1/auth/token/renew).
func (f *Fetcher) renew(ctx context.Context, now time.Time) error {
	const op = "renewing the infisical access token"
	var out tokenResponse
	err := f.call(ctx, op, http.MethodPost, "/api/v1/auth/token/renew", nil,
		map[string]string{"accessToken": f.session.token}, "", &out)
	if err != nil {
		return err
	}
	if err := checkToken(op, out); err != nil {
		return err
	}
	granted := seconds(out.ExpiresIn)
	if granted <= 0 {
		return &apiError{op: op, reason: "Infisical granted no lifetime"}
	}
	f.session.token = out.AccessToken
	f.session.expiresAt = now.Add(granted)
	if !f.session.maxAt.IsZero() && f.session.expiresAt.After(f.session.maxAt) {
		f.session.expiresAt = f.session.maxAt // a token never outlives its max TTL
	}
	f.log.Info("infisical access token renewed", f.storeField(), zap.Duration("expires_in", granted))
	return nil
}

// checkToken rejects a token answer that cannot be used.
func checkToken(op string, out tokenResponse) error {
	switch {
	case !isTokenLike(out.AccessToken):
		return &apiError{op: op, reason: "Infisical returned an empty or malformed access token"}
	case out.TokenType != "" && out.TokenType != "Bearer":
		return &apiError{op: op, reason: "Infisical returned a token of type " + clip(out.TokenType, 40) + ", not Bearer"}
	}
	return nil
}

// seconds converts a lifetime in seconds; negative, fractional-only or
// absurd values count as zero ("no expiry" is then assumed, and a 401
// still triggers a new login).
func seconds(v float64) time.Duration {
	if v < 1 || math.IsNaN(v) {
		return 0
	}
	return time.Duration(min(v, maxSeconds)) * time.Second
}

// maxSeconds keeps a duration in seconds from overflowing time.Duration.
const maxSeconds = float64(math.MaxInt64/int64(time.Second)) - 1
