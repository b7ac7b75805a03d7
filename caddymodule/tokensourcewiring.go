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
	mu      sync.Mutex
	rotated map[string]string // source name → refresh token kept in the state database
}

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
	ts := &tokenSources{db: a.state.db, creds: a.creds, client: client, logger: a.logger, rotated: map[string]string{}}
	for _, m := range stores {
		if b, ok := m.(*builtinstore.Store); ok && ts.sealer == nil {
			ts.sealer = b
		}
	}
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
	return ts.creds.PutSource(src)
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

// saveRefresh keeps a rotated refresh token: written back to the
// writable store when that store holds it, otherwise sealed by the
// built-in store's key into the state database. Either way this
// process uses it from now on.
func (ts *tokenSources) saveRefresh(ctx context.Context, name string, spec tokensource.Spec, cred, v string) error {
	ts.mu.Lock()
	_, kept := ts.rotated[name]
	ts.mu.Unlock()
	if !kept && ts.creds.WritableServes(cred) {
		m, _, err := ts.creds.Put(cred, v)
		if err == nil {
			ts.logger.Info("rotated refresh token written back", zap.String("token_source", name), zap.String("credential", cred), zap.String("version", m.Version))
		}
		return err
	}
	ts.mu.Lock()
	ts.rotated[name] = v
	ts.mu.Unlock()
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
	if !ts.creds.IsSource(name) && ts.creds.Snapshot().Has(name) {
		return false, fmt.Errorf("%w: a store holds a value named %s; delete it first, or pick another name", credentials.ErrIsTokenSource, name)
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
	found, err := ts.db.DeleteTokenSource(ctx, name)
	if err != nil {
		return false, fromState(err)
	}
	ts.mu.Lock()
	delete(ts.rotated, name)
	ts.mu.Unlock()
	return ts.creds.DeleteSource(name) || found, nil
}
