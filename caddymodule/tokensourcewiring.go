package caddymodule

// Wiring of the credentials that mint tokens (tokensource): their
// definitions live in the state database, their long-lived inputs in
// the stores, their access tokens only in memory.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
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

// tokenSources keeps the token sources of one config. The state
// database is the truth: put and delete write it first, and apply
// (the change feed) brings every broker of a cluster to what it holds.
type tokenSources struct {
	db     *state.DB
	creds  *credentials.Set
	sealer *builtinstore.Store // seals rotated refresh tokens of read-only stores; nil: none configured
	client *http.Client
	logger *zap.Logger
	putMu  sync.Mutex // serializes put, delete and apply, so the one-reader rule of refresh tokens holds
	mu     sync.Mutex
	defs   map[string]tokenDef // source name → its served definition
	// rotated is source name → newest rotated refresh token, until its
	// store holds it (a writable store) or for good (a read-only one).
	rotated map[string]string
}

// tokenDef is a served definition: its generation (state.TokenSourceRow)
// and the sealed refresh token last written or read for it.
type tokenDef struct {
	spec   tokensource.Spec
	gen    int64
	sealed []byte
}

// newTokenSources returns an empty tokenSources; sealer may be nil.
func newTokenSources(db *state.DB, creds *credentials.Set, sealer *builtinstore.Store, client *http.Client, logger *zap.Logger) *tokenSources {
	return &tokenSources{db: db, creds: creds, sealer: sealer, client: client, logger: logger,
		defs: map[string]tokenDef{}, rotated: map[string]string{}}
}

// Write-back of a rotated refresh token: tries, and the first pause
// between them (doubled each time).
const (
	saveRefreshTries = 3
	saveRefreshPause = 50 * time.Millisecond
)

// openTokenSources builds the token endpoints' client (the stores'
// hardened one, dialing through the egress policy), loads every
// definition and follows the change feed. One that no longer validates
// is skipped and logged, not fatal: the broker must still start.
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
	// Subscribed before loading, so a change saved meanwhile waits.
	a.tokenFeed = newChangeWorker("token sources", a.logger, ts.apply)
	a.cancelTokenFeed = a.state.db.Subscribe(a.tokenFeed.push)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.load(ctx); err != nil {
		return err
	}
	a.tokenFeed.start()
	return nil
}

// load registers every stored definition.
func (ts *tokenSources) load(ctx context.Context) error {
	rows, err := ts.db.ListTokenSources(ctx)
	if err != nil {
		return fmt.Errorf("loading token sources: %w", err)
	}
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	for _, r := range rows {
		ts.applyRow(r)
	}
	return nil
}

// apply follows one change of the feed: the named source (every one,
// Key "") is brought to what the state database holds.
func (ts *tokenSources) apply(ctx context.Context, ch state.Change) error {
	if ch.Topic != state.TopicTokenSources {
		return nil
	}
	if ch.Key != "" {
		r, found, err := ts.db.GetTokenSource(ctx, ch.Key)
		if err != nil {
			return err
		}
		ts.putMu.Lock()
		defer ts.putMu.Unlock()
		if !found {
			ts.forget(ch.Key)
			return nil
		}
		ts.applyRow(r)
		return nil
	}
	rows, err := ts.db.ListTokenSources(ctx)
	if err != nil {
		return err
	}
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	stored := map[string]bool{}
	for _, r := range rows {
		stored[r.Name] = true
		ts.applyRow(r)
	}
	ts.mu.Lock()
	var gone []string
	for name := range ts.defs {
		if !stored[name] {
			gone = append(gone, name)
		}
	}
	ts.mu.Unlock()
	for _, name := range gone {
		ts.forget(name)
	}
	return nil
}

// applyRow serves the stored row r (ts.putMu held): the live source
// stays when its definition did not change, and a refresh token that
// another broker rotated and sealed is taken over. A row that does not
// validate or open is not served (fail closed) and logged.
func (ts *tokenSources) applyRow(r state.TokenSourceRow) {
	spec, err := tokensource.ParseSpec(r.Doc)
	ts.mu.Lock()
	d, had := ts.defs[r.Name]
	ts.mu.Unlock()
	same := err == nil && had && d.gen == r.Generation && reflect.DeepEqual(d.spec, spec)
	if err == nil && !same {
		err = ts.checkRefreshReader(r.Name, spec)
	}
	var rotated string
	news := len(r.RefreshSealed) > 0 && !(had && d.gen == r.Generation && bytes.Equal(d.sealed, r.RefreshSealed))
	if err == nil && news {
		rotated, err = ts.unseal(r.Name, spec, r.RefreshSealed)
	}
	if err == nil && !same {
		_, err = ts.register(r.Name, spec, r.Generation, r.UpdatedAt)
	}
	if err != nil {
		ts.logger.Error("token source not served", zap.String("name", r.Name), zap.Error(err))
		ts.forget(r.Name)
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	d = ts.defs[r.Name]
	if had && d.gen != r.Generation || !had {
		delete(ts.rotated, r.Name)
	}
	if news {
		ts.rotated[r.Name] = rotated
		d.sealed = r.RefreshSealed
	}
	d.spec, d.gen = spec, r.Generation
	ts.defs[r.Name] = d
}

// forget stops serving name (ts.putMu held).
func (ts *tokenSources) forget(name string) {
	ts.mu.Lock()
	delete(ts.rotated, name)
	delete(ts.defs, name)
	ts.mu.Unlock()
	ts.creds.DeleteSource(name)
}

func refreshPurpose(name string, spec tokensource.Spec) string {
	return "token-source/" + name + "/refresh/" + spec.RefreshToken
}

func (ts *tokenSources) unseal(name string, spec tokensource.Spec, sealed []byte) (string, error) {
	if ts.sealer == nil {
		return "", errors.New("a rotated refresh token is kept sealed, but no built-in store is configured to open it")
	}
	v, err := ts.sealer.OpenAux(refreshPurpose(name, spec), sealed)
	if err != nil {
		return "", errors.New("the kept refresh token does not open (wrong master password, or a modified record)")
	}
	return string(v), nil
}

// register makes name a token source in the Set, at generation gen.
func (ts *tokenSources) register(name string, spec tokensource.Spec, gen int64, defined time.Time) (bool, error) {
	src, err := tokensource.New(name, spec, tokensource.Env{
		Client:           ts.client,
		Lookup:           func(cred string) (string, error) { return ts.input(name, spec, cred) },
		SaveRefreshToken: func(ctx context.Context, cred, v string) error { return ts.saveRefresh(ctx, name, gen, spec, cred, v) },
		Defined:          defined,
	})
	if err != nil {
		return false, err
	}
	return ts.creds.PutSource(src)
}

// checkInputs refuses (400) a token source reading itself or another
// token source, and one named like another source's input: a source's
// inputs are stored values.
func (ts *tokenSources) checkInputs(name string, spec tokensource.Spec) error {
	for _, in := range spec.Inputs() {
		if in == name {
			return fmt.Errorf("%w: token source %s cannot read itself as an input", tokensource.ErrInvalidSpec, name)
		}
		if ts.creds.IsSource(in) {
			return fmt.Errorf("%w: input %s is a token source itself; inputs are stored values", tokensource.ErrInvalidSpec, in)
		}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for other, d := range ts.defs {
		if other != name && slices.Contains(d.spec.Inputs(), name) {
			return fmt.Errorf("%w: token source %s reads %s as a stored input; a token source cannot take that name", tokensource.ErrInvalidSpec, other, name)
		}
	}
	return nil
}

// inputField is the Spec field through which spec reads cred.
func inputField(spec tokensource.Spec, cred string) string {
	switch cred {
	case spec.RefreshToken:
		return "refresh_token"
	case spec.ClientSecret:
		return "client_secret"
	}
	return "private_key"
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
	for other, d := range ts.defs {
		if other != name && d.spec.RefreshToken == spec.RefreshToken {
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
		return "", fmt.Errorf("its %s input is a token source itself, not a stored value", inputField(spec, cred))
	}
	v, err := ts.creds.Snapshot().Lookup(cred, time.Now())
	var un *credentials.UnavailableError
	if errors.As(err, &un) && un.Err == nil {
		// Named by its field: the name is the operator's to know.
		return "", fmt.Errorf("its %s input is not in any store", inputField(spec, cred))
	}
	return v, err
}

// saveRefresh keeps a rotated refresh token of generation gen: in
// memory first (the old one may be dead already), then written back to
// the writable store when that store serves it (retried; once a write
// succeeded the store's value wins again), otherwise sealed by the
// built-in store's key into the state database (which tells the other
// brokers). A fetch that started before a redefinition changed where
// the refresh token comes from keeps nothing.
func (ts *tokenSources) saveRefresh(ctx context.Context, name string, gen int64, spec tokensource.Spec, cred, v string) error {
	ts.mu.Lock()
	if d, ok := ts.defs[name]; !ok || d.gen != gen {
		ts.mu.Unlock()
		return errors.New("the token source was redefined or deleted meanwhile: its rotated refresh token is not kept")
	}
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
	sealed := ts.sealer.SealAux(refreshPurpose(name, spec), []byte(v))
	found, err := ts.db.SetTokenSourceRefresh(ctx, name, gen, sealed)
	if err == nil && !found {
		err = errors.New("the token source was redefined or deleted meanwhile")
	}
	if err != nil {
		return err
	}
	ts.mu.Lock()
	if d, ok := ts.defs[name]; ok && d.gen == gen {
		d.sealed = sealed
		ts.defs[name] = d
	}
	ts.mu.Unlock()
	ts.logger.Info("rotated refresh token kept sealed in the state database", zap.String("token_source", name), zap.String("credential", cred))
	return nil
}

// sameRefresh reports whether old and spec take the refresh token from
// the same place (kind, token_url and refresh_token credential): a
// rotated refresh token kept for old then still holds.
func sameRefresh(old []byte, spec tokensource.Spec) bool {
	o, err := tokensource.ParseSpec(old)
	return err == nil && o.Kind == spec.Kind && o.TokenURL == spec.TokenURL && o.RefreshToken == spec.RefreshToken
}

// put defines (or redefines) a token source: stored first, then
// served. A redefinition that changes where the refresh token comes
// from forgets a kept refresh token; an identical one keeps the live
// source (and its cached access token).
func (ts *tokenSources) put(ctx context.Context, name string, spec tokensource.Spec, doc []byte) (bool, error) {
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	if !ts.creds.IsSource(name) && ts.creds.Snapshot().Has(name) {
		return false, fmt.Errorf("%w: a store holds a value named %s; delete it first, or pick another name", credentials.ErrIsTokenSource, name)
	}
	if err := ts.checkInputs(name, spec); err != nil {
		return false, err
	}
	if err := ts.checkRefreshReader(name, spec); err != nil {
		return false, err
	}
	if err := ts.checkRefreshHome(spec); err != nil {
		return false, err
	}
	gen, err := ts.db.PutTokenSource(ctx, name, doc, func(old []byte) bool { return sameRefresh(old, spec) })
	if err != nil {
		return false, fromState(err)
	}
	ts.mu.Lock()
	d, had := ts.defs[name]
	ts.mu.Unlock()
	if had && d.gen == gen && reflect.DeepEqual(d.spec, spec) && ts.creds.IsSource(name) {
		return false, nil
	}
	created, err := ts.register(name, spec, gen, time.Now())
	if err != nil {
		return false, err
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if !had || d.gen != gen {
		delete(ts.rotated, name)
		d.sealed = nil
	}
	d.spec, d.gen = spec, gen
	ts.defs[name] = d
	return created, nil
}

// delete removes a token source; it reports whether there was one.
func (ts *tokenSources) delete(ctx context.Context, name string) (bool, error) {
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	found, err := ts.db.DeleteTokenSource(ctx, name)
	if err != nil {
		return false, fromState(err)
	}
	served := ts.creds.IsSource(name)
	ts.forget(name)
	return served || found, nil
}
