package caddymodule

// Wiring of the credentials that mint tokens (tokensource): their
// definitions live in the state database, their long-lived inputs in
// the stores, their access tokens only in memory.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	"github.com/agentvault/caddy-agent-vault/storebackends"
	builtinstore "github.com/agentvault/caddy-agent-vault/storebackends/builtin"
	"github.com/agentvault/caddy-agent-vault/storebackends/storehttp"
)

// tokenEndpointTimeout bounds dialing, the TLS handshake and the
// answer's headers of one token endpoint call.
const tokenEndpointTimeout = 15 * time.Second

// maxTokenAnswer caps a token endpoint's answer.
const maxTokenAnswer = 1 << 20

// tokenSources keeps the token sources of one config.
type tokenSources struct {
	db      *state.DB
	creds   *credentials.Set
	sealer  *builtinstore.Store // seals rotated refresh tokens of read-only stores; nil: none configured
	client  *http.Client
	logger  *zap.Logger
	putMu   sync.Mutex // serializes put and delete, so the one-reader rule of refresh tokens holds
	mu      sync.Mutex
	specs   map[string]tokensource.Spec // source name → its served definition
	rotated map[string]string           // source name → newest rotated refresh token, until its store holds it
}

// newTokenSources returns an empty tokenSources; sealer may be nil.
func newTokenSources(db *state.DB, creds *credentials.Set, sealer *builtinstore.Store, client *http.Client, logger *zap.Logger) *tokenSources {
	return &tokenSources{db: db, creds: creds, sealer: sealer, client: client, logger: logger,
		specs: map[string]tokensource.Spec{}, rotated: map[string]string{}}
}

// Write-back of a rotated refresh token: tries, and the first pause
// between them (doubled each time).
const (
	saveRefreshTries = 3
	saveRefreshPause = 50 * time.Millisecond
)

// openTokenSources builds the token endpoints' client (the stores'
// hardened one, dialing through the egress policy) and loads every
// definition. One that no longer validates is skipped and logged, not
// fatal: the broker must still start.
func (a *App) openTokenSources(stores []any) error {
	dialer := &egress.Dialer{Policy: a.egress, Self: a.self, Dialer: net.Dialer{Timeout: tokenEndpointTimeout, KeepAlive: 30 * time.Second}}
	client, _, err := storehttp.NewClient(storehttp.Options{Service: "token endpoint", Timeout: tokenEndpointTimeout,
		MaxBody: maxTokenAnswer, DialContext: dialer.DialContext})
	if err != nil {
		return err
	}
	var sealer *builtinstore.Store
	for _, m := range stores {
		if b, ok := m.(*builtinstore.Store); ok && sealer == nil {
			sealer = b
		}
	}
	ts := newTokenSources(a.state.db, a.creds, sealer, client, a.logger)
	a.tokens = ts
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return ts.load(ctx)
}

// load registers every stored definition.
func (ts *tokenSources) load(ctx context.Context) error {
	rows, err := ts.db.ListTokenSources(ctx)
	if err != nil {
		return fmt.Errorf("loading token sources: %w", err)
	}
	for _, r := range rows {
		spec, err := tokensource.ParseSpec(r.Doc)
		if err == nil {
			err = ts.checkRefreshReader(r.Name, spec)
		}
		if err == nil && len(r.RefreshSealed) > 0 {
			err = ts.unseal(r.Name, spec, r.RefreshSealed)
		}
		if err == nil {
			_, err = ts.register(r.Name, spec, r.UpdatedAt)
		}
		if err != nil {
			ts.logger.Error("token source skipped", zap.String("name", r.Name), zap.Error(err))
		}
	}
	return nil
}

func refreshPurpose(name string, spec tokensource.Spec) string {
	return "token-source/" + name + "/refresh/" + spec.RefreshToken
}

func (ts *tokenSources) unseal(name string, spec tokensource.Spec, sealed []byte) error {
	if ts.sealer == nil {
		return errors.New("a rotated refresh token is kept sealed, but no built-in store is configured to open it")
	}
	v, err := ts.sealer.OpenAux(refreshPurpose(name, spec), sealed)
	if err != nil {
		return errors.New("the kept refresh token does not open (wrong master password, or a modified record)")
	}
	ts.mu.Lock()
	ts.rotated[name] = string(v)
	ts.mu.Unlock()
	return nil
}

// register makes name a token source in the Set.
func (ts *tokenSources) register(name string, spec tokensource.Spec, defined time.Time) (bool, error) {
	src, err := tokensource.New(name, spec, tokensource.Env{
		Client:           ts.client,
		Lookup:           func(cred string) (string, error) { return ts.input(name, spec, cred) },
		SaveRefreshToken: func(ctx context.Context, cred, v string) error { return ts.saveRefresh(ctx, name, spec, cred, v) },
		Defined:          defined,
	})
	if err != nil {
		return false, err
	}
	created, err := ts.creds.PutSource(src)
	if err == nil {
		ts.mu.Lock()
		ts.specs[name] = spec
		ts.mu.Unlock()
	}
	return created, err
}

// checkRefreshReader refuses a second token source reading the
// refresh_token credential another one reads: a refresh token is
// one-time when the server rotates it, so two sources presenting it
// would lock each other out. One reader per refresh token is simpler
// than sharing the rotation and the fetch between sources.
func (ts *tokenSources) checkRefreshReader(name string, spec tokensource.Spec) error {
	if spec.RefreshToken == "" {
		return nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for other, s := range ts.specs {
		if other != name && s.RefreshToken == spec.RefreshToken {
			return fmt.Errorf("%w: token source %s already reads refresh token credential %s (a rotated refresh token works once: give each source its own)",
				credentials.ErrIsTokenSource, other, spec.RefreshToken)
		}
	}
	return nil
}

// checkRefreshHome refuses an oauth2_refresh whose refresh token sits
// in a read-only store when no built-in store can seal a rotated one:
// a rotation would then live in memory only and die with the process.
func (ts *tokenSources) checkRefreshHome(spec tokensource.Spec) error {
	if spec.RefreshToken == "" || ts.sealer != nil || !ts.creds.Snapshot().Has(spec.RefreshToken) || ts.creds.WritableServes(spec.RefreshToken) {
		return nil
	}
	return fmt.Errorf("%w: refresh token credential %s is in a read-only store and no built-in store is configured to keep a rotated one; configure a built-in store, or store the refresh token in the writable one",
		credentials.ErrIsTokenSource, spec.RefreshToken)
}

// input reads one input credential of source name: a kept rotated
// refresh token first, then the stores (freshness applied).
func (ts *tokenSources) input(name string, spec tokensource.Spec, cred string) (string, error) {
	if cred == spec.RefreshToken {
		ts.mu.Lock()
		v, ok := ts.rotated[name]
		ts.mu.Unlock()
		if ok {
			return v, nil
		}
	}
	if ts.creds.IsSource(cred) {
		return "", fmt.Errorf("credential %s is a token source itself, not a stored value", cred)
	}
	return ts.creds.Snapshot().Lookup(cred, time.Now())
}

// saveRefresh keeps a rotated refresh token: in memory first (the old
// one may be dead already), then written back to the writable store
// when that store serves it (retried; once a write succeeded the
// store's value wins again), otherwise sealed by the built-in store's
// key into the state database.
func (ts *tokenSources) saveRefresh(ctx context.Context, name string, spec tokensource.Spec, cred, v string) error {
	ts.mu.Lock()
	ts.rotated[name] = v
	ts.mu.Unlock()
	if ts.creds.WritableServes(cred) {
		var err error
		pause := saveRefreshPause
		for try := 0; try < saveRefreshTries; try++ {
			if try > 0 {
				select {
				case <-ctx.Done():
					return fmt.Errorf("the rotated refresh token is kept in memory only: writing it back to credential %s failed: %v", cred, err)
				case <-time.After(pause):
				}
				pause *= 2
			}
			var m storebackends.Meta
			if m, _, err = ts.creds.Put(cred, v); err == nil {
				ts.mu.Lock()
				if ts.rotated[name] == v {
					delete(ts.rotated, name)
				}
				ts.mu.Unlock()
				ts.logger.Info("rotated refresh token written back", zap.String("token_source", name), zap.String("credential", cred), zap.String("version", m.Version))
				return nil
			}
		}
		return fmt.Errorf("the rotated refresh token is kept in memory only: writing it back to credential %s failed: %v", cred, err)
	}
	if ts.sealer == nil {
		return fmt.Errorf("credential %s is in a read-only store and no built-in store is configured to seal the new one: it is kept in memory only", cred)
	}
	found, err := ts.db.SetTokenSourceRefresh(ctx, name, ts.sealer.SealAux(refreshPurpose(name, spec), []byte(v)))
	if err == nil && !found {
		err = errors.New("the token source was deleted meanwhile")
	}
	if err == nil {
		ts.logger.Info("rotated refresh token kept sealed in the state database", zap.String("token_source", name), zap.String("credential", cred))
	}
	return err
}

// put defines (or redefines) a token source: stored first, then
// served. A redefinition forgets a kept refresh token.
func (ts *tokenSources) put(ctx context.Context, name string, spec tokensource.Spec, doc []byte) (bool, error) {
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	if !ts.creds.IsSource(name) && ts.creds.Snapshot().Has(name) {
		return false, fmt.Errorf("%w: a store holds a value named %s; delete it first, or pick another name", credentials.ErrIsTokenSource, name)
	}
	if err := ts.checkRefreshReader(name, spec); err != nil {
		return false, err
	}
	if err := ts.checkRefreshHome(spec); err != nil {
		return false, err
	}
	if err := ts.db.PutTokenSource(ctx, name, doc); err != nil {
		return false, fromState(err)
	}
	ts.mu.Lock()
	delete(ts.rotated, name)
	ts.mu.Unlock()
	return ts.register(name, spec, time.Now())
}

// delete removes a token source; it reports whether there was one.
func (ts *tokenSources) delete(ctx context.Context, name string) (bool, error) {
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	found, err := ts.db.DeleteTokenSource(ctx, name)
	if err != nil {
		return false, fromState(err)
	}
	ts.mu.Lock()
	delete(ts.rotated, name)
	delete(ts.specs, name)
	ts.mu.Unlock()
	return ts.creds.DeleteSource(name) || found, nil
}
