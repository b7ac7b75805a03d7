package hashicorp

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// session is what the fetcher knows about the token it is using. The
// token lifecycle is driven lazily from CheckLogin and Fetch (the sync
// engine polls often enough), so no goroutine is needed.
type session struct {
	valid     bool          // looked up (token auth) or logged in (AppRole)
	ttl       time.Duration // lifetime the token was granted; 0 = never expires
	expiresAt time.Time     // meaningful only when ttl > 0
	renewable bool
	capped    bool // renewing stopped extending it: its max TTL is reached
}

// left is the token's remaining lifetime.
func (s session) left(now time.Time) time.Duration { return s.expiresAt.Sub(now) }

// due reports whether less than a third of the token's lifetime is
// left, the point where it is renewed or replaced.
func (s session) due(now time.Time) bool { return s.ttl > 0 && s.left(now) < s.ttl/3 }

// expiryWarnWindow is the least advance notice given before a token
// that cannot be renewed expires.
const expiryWarnWindow = 24 * time.Hour

// CheckLogin verifies the credentials with Vault: token auth looks the
// token up (auth/token/lookup-self), AppRole logs in. Errors name the
// problem and never contain the token or the AppRole credentials.
func (f *Fetcher) CheckLogin(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	f.session.valid = false
	return f.ensureSession(ctx)
}

// ensureSession makes sure the client holds a token that is usable for
// the coming requests. The caller holds f.mu.
func (f *Fetcher) ensureSession(ctx context.Context) error {
	if f.cfg.AuthMethod == AuthAppRole {
		// AppRole tokens are replaced by logging in again rather than
		// renewed: one code path, and it also recovers from revocation.
		if !f.session.valid || f.session.due(f.now()) {
			return f.login(ctx)
		}
		return nil
	}
	if !f.session.valid {
		if err := f.lookupToken(ctx); err != nil {
			return err
		}
	}
	return f.maintainToken(ctx)
}

// lookupToken learns the configured token's TTL and renewability.
func (f *Fetcher) lookupToken(ctx context.Context) error {
	const op = "looking up the vault token"
	f.session = session{}
	secret, err := f.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		ve := f.fail(op, err)
		if ve.status == http.StatusForbidden || ve.status == http.StatusUnauthorized {
			ve.op = "vault token rejected"
		}
		return ve
	}
	if secret == nil || secret.Data == nil {
		return noResponse(op, 0, "empty response")
	}
	left, err := secret.TokenTTL()
	if err != nil {
		return noResponse(op, 0, "malformed ttl in response")
	}
	renewable, err := secret.TokenIsRenewable()
	if err != nil {
		return noResponse(op, 0, "malformed renewable flag in response")
	}
	s := session{valid: true, renewable: renewable}
	if left > 0 {
		// The full lifetime is what a renewal asks for and what "a third
		// left" is measured against: the period of a periodic token, else
		// the TTL it was created with.
		s.ttl = seconds(secret.Data["period"])
		if s.ttl == 0 {
			s.ttl = seconds(secret.Data["creation_ttl"])
		}
		s.ttl = max(s.ttl, left)
		s.expiresAt = f.now().Add(left)
	}
	f.session = s
	f.log.Info("vault token looked up", f.storeField(),
		zap.Duration("expires_in", left), zap.Bool("renewable", renewable))
	return nil
}

// seconds reads a whole number of seconds from a lookup-self field;
// absent, negative or malformed fields count as zero.
func seconds(v any) time.Duration {
	n, ok := v.(json.Number)
	if !ok {
		return 0
	}
	i, err := n.Int64()
	if err != nil || i <= 0 {
		return 0
	}
	return time.Duration(min(i, maxSeconds)) * time.Second
}

// maxSeconds keeps a duration in seconds from overflowing time.Duration.
const maxSeconds = math.MaxInt64 / int64(time.Second)

// maintainToken renews a renewable token that has less than a third of
// its lifetime left, and warns loudly about one that cannot be renewed
// and will expire soon.
func (f *Fetcher) maintainToken(ctx context.Context) error {
	if f.session.ttl == 0 {
		return nil // root or other non-expiring token
	}
	now := f.now()
	if f.session.renewable && !f.session.capped && f.session.due(now) {
		if err := f.renewToken(ctx, now); err != nil {
			return err
		}
	}
	left := f.session.left(now)
	if (f.session.renewable && !f.session.capped) || left >= max(expiryWarnWindow, f.session.ttl/3) {
		return nil
	}
	why := "it is not renewable"
	if f.session.capped {
		why = "it has reached its maximum TTL"
	}
	if left <= 0 {
		f.log.Warn("vault token for store "+f.storeName()+" has expired; "+why+": replace it", f.storeField())
	} else {
		f.log.Warn("vault token for store "+f.storeName()+" expires in "+left.Round(time.Second).String()+"; "+why+": replace it",
			f.storeField(), zap.Duration("expires_in", left))
	}
	return nil
}

// renewToken extends the token by its full lifetime (renew-self).
func (f *Fetcher) renewToken(ctx context.Context, now time.Time) error {
	const op = "renewing the vault token"
	increment := f.session.ttl
	secret, err := f.client.Auth().Token().RenewSelfWithContext(ctx, int(increment/time.Second))
	if err != nil {
		return f.fail(op, err)
	}
	if secret == nil || secret.Auth == nil {
		return noResponse(op, 0, "response has no auth data")
	}
	granted := time.Duration(secret.Auth.LeaseDuration) * time.Second
	f.session.expiresAt = now.Add(granted)
	f.session.renewable = secret.Auth.Renewable
	if granted < increment {
		// Vault capped the renewal at the token's max TTL: renewing again
		// would not help, so stop and warn instead.
		f.session.capped = true
	}
	f.log.Info("vault token renewed", f.storeField(),
		zap.Duration("expires_in", granted), zap.Bool("capped", f.session.capped))
	return nil
}

// login obtains a fresh token with the AppRole credentials.
func (f *Fetcher) login(ctx context.Context) error {
	const op = "approle login failed"
	f.session = session{}
	// Login needs no token; sending a stale one could make Vault reject
	// the request.
	f.client.ClearToken()
	secret, err := f.client.Logical().WriteWithContext(ctx, "auth/"+f.cfg.AuthMount+"/login", map[string]any{
		"role_id":   f.cfg.RoleID,
		"secret_id": f.cfg.SecretID,
	})
	if err != nil {
		return f.fail(op, err)
	}
	switch {
	case secret == nil || secret.Auth == nil:
		return noResponse(op, 0, "Vault returned no token")
	case secret.Auth.MFARequirement != nil:
		return noResponse(op, 0, "Vault requires MFA for this login, which is not supported")
	case !isTokenLike(secret.Auth.ClientToken):
		return noResponse(op, 0, "Vault returned an empty or malformed token")
	}
	f.client.SetToken(secret.Auth.ClientToken)
	s := session{valid: true, renewable: secret.Auth.Renewable}
	if lease := time.Duration(secret.Auth.LeaseDuration) * time.Second; lease > 0 {
		s.ttl = lease
		s.expiresAt = f.now().Add(lease)
	}
	f.session = s
	f.log.Info("vault approle login", f.storeField(), zap.Duration("expires_in", s.ttl))
	return nil
}

func (f *Fetcher) storeName() string {
	if f.cfg.Name == "" {
		return "(unnamed)"
	}
	return `"` + f.cfg.Name + `"`
}

func (f *Fetcher) storeField() zap.Field { return zap.String("store", f.cfg.Name) }
