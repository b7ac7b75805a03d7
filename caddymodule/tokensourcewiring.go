package caddymodule

// Wiring of the credentials that mint tokens (tokensource): their
// definitions live in the state database, their long-lived inputs in
// the stores, their access tokens only in memory.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	"github.com/agentvault/caddy-agent-vault/storebackends"
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
	sealer storebackends.Sealer // seals rotated refresh tokens of read-only stores; nil: none configured
	client *http.Client
	logger *zap.Logger
	putMu  sync.Mutex // serializes put, delete and apply, so the one-reader rule of refresh tokens holds
	mu     sync.Mutex
	defs   map[string]tokenDef // source name → its served definition
	// rotated is source name → newest rotated refresh token, until its
	// store holds it (a writable store) or for good (a read-only one).
	rotated map[string]string
	// refreshLocks is refresh_token credential → the lock its fetches
	// take (a buffered channel of one), whichever Source runs them: a
	// redefinition's new Source waits for the old one's fetch and then
	// presents the refresh token that fetch kept.
	refreshLocks map[string]chan struct{}
	// retired is source name → the Source a delete or a failed load
	// stopped serving, until its token expires: a source defined again
	// under that name keeps scrubbing its tokens (tokensource.Inherit).
	retired map[string]*tokensource.Source
	// unserved is source name → why its stored definition is not served
	// (it does not validate, its sealed token does not open, or another
	// source already reads its refresh token: a database from before
	// that rule), for the listing's last_error.
	unserved map[string]unservedDef
	// persistPause is the first pause of persist's background retries
	// (persistRetryPause; tests shorten it).
	persistPause time.Duration
	// done ends the background retries of persist (close).
	done      chan struct{}
	closeOnce sync.Once
}

// unservedDef is a stored definition applyRow refused.
type unservedDef struct {
	kind    string
	defined time.Time
	err     string
}

// tokenDef is a served definition: its generation and refresh_version
// (state.TokenSourceRow) and the sealed refresh token last written or
// read for it.
type tokenDef struct {
	spec   tokensource.Spec
	gen    int64
	rv     int64
	sealed []byte
}

// newTokenSources returns an empty tokenSources; sealer may be nil.
func newTokenSources(db *state.DB, creds *credentials.Set, sealer storebackends.Sealer, client *http.Client, logger *zap.Logger) *tokenSources {
	return &tokenSources{db: db, creds: creds, sealer: sealer, client: client, logger: logger,
		defs: map[string]tokenDef{}, rotated: map[string]string{}, refreshLocks: map[string]chan struct{}{},
		retired: map[string]*tokensource.Source{}, unserved: map[string]unservedDef{},
		done: make(chan struct{}), persistPause: persistRetryPause}
}

// Write-back of a rotated refresh token: tries, and the first pause
// between them (doubled each time).
const (
	saveRefreshTries = 3
	saveRefreshPause = 50 * time.Millisecond
)

// The background retries of a rotated refresh token not persisted:
// the first pause, doubled up to the last.
const (
	persistRetryPause    = time.Second
	persistRetryPauseMax = time.Minute
)

// close ends the background retries (App.Cleanup).
func (ts *tokenSources) close() { ts.closeOnce.Do(func() { close(ts.done) }) }

// The fetch lease of a rotating source (state.AcquireTokenSourceFetch):
// held for at most one fetch and the keeping of its rotated refresh
// token; a broker finding it held re-reads the row, pausing from
// fetchLeasePoll doubling to fetchLeasePollMax, for at most
// tokensource.ExclusiveWait.
const (
	fetchLease        = tokensource.FetchTimeout + 10*time.Second
	fetchLeasePoll    = 20 * time.Millisecond
	fetchLeasePollMax = 500 * time.Millisecond
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
	// The first store that can seal (the built-in one) keeps what a
	// read-only store cannot take back.
	var sealer storebackends.Sealer
	for _, m := range stores {
		if sl, ok := m.(storebackends.Sealer); ok && sealer == nil {
			sealer = sl
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
// another broker rotated and sealed is taken over. A row older than the
// one served (a smaller generation, or a smaller refresh_version of the
// same one: read before a write this broker already applied) is
// ignored, so the feed never brings back a dead refresh token. A row
// that does not validate or open is not served (fail closed) and
// logged.
func (ts *tokenSources) applyRow(r state.TokenSourceRow) {
	spec, err := tokensource.ParseSpec(r.Doc)
	ts.mu.Lock()
	d, had := ts.defs[r.Name]
	ts.mu.Unlock()
	if had && (r.Generation < d.gen || r.Generation == d.gen && r.RefreshVersion < d.rv) {
		return
	}
	same := err == nil && had && d.gen == r.Generation && reflect.DeepEqual(d.spec, spec)
	if err == nil && !same {
		err = ts.checkRefreshReader(r.Name, spec)
	}
	var rotated string
	news := !(had && d.gen == r.Generation && d.rv == r.RefreshVersion)
	if err == nil && news && len(r.RefreshSealed) > 0 {
		rotated, err = ts.unseal(r.Name, spec, r.RefreshSealed)
	}
	if err == nil && !same {
		_, err = ts.register(r.Name, spec, r.Generation, r.UpdatedAt)
	}
	if err != nil {
		ts.logger.Error("token source not served", zap.String("name", r.Name), zap.Error(err))
		ts.forget(r.Name)
		ts.mu.Lock()
		ts.unserved[r.Name] = unservedDef{kind: spec.Kind, defined: r.UpdatedAt, err: "not served: " + err.Error()}
		ts.mu.Unlock()
		return
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.unserved, r.Name)
	d = ts.defs[r.Name]
	if news {
		// A rotation kept sealed is taken over; one written back to its
		// store (nothing sealed) is read from there.
		delete(ts.rotated, r.Name)
		if len(r.RefreshSealed) > 0 {
			ts.rotated[r.Name] = rotated
		}
		d.sealed = r.RefreshSealed
	}
	d.spec, d.gen, d.rv = spec, r.Generation, r.RefreshVersion
	ts.defs[r.Name] = d
}

// forget stops serving name (ts.putMu held).
func (ts *tokenSources) forget(name string) {
	old, _ := ts.creds.Snapshot().Source(name)
	ts.mu.Lock()
	delete(ts.unserved, name)
	delete(ts.rotated, name)
	delete(ts.defs, name)
	if old != nil {
		ts.retired[name] = old
	}
	for n, r := range ts.retired {
		if !time.Now().Before(r.ScrubUntil()) {
			delete(ts.retired, n)
		}
	}
	ts.mu.Unlock()
	ts.creds.DeleteSource(name)
}

// list adds the stored definitions that are not served (each with
// its reason in LastError) to a listing of the credentials, by name.
func (ts *tokenSources) list(served []storebackends.Meta) []storebackends.Meta {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.unserved) == 0 {
		return served
	}
	out := slices.Clone(served)
	for name, u := range ts.unserved {
		out = append(out, storebackends.Meta{Name: name, Store: credentials.TokenSourceStore, Version: "0", UpdatedAt: u.defined, Kind: u.kind, LastError: u.err})
	}
	slices.SortStableFunc(out, func(a, b storebackends.Meta) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// predecessor is the Source whose tokens a new Source for name keeps
// scrubbing: the one served, or one retired whose token is still valid.
func (ts *tokenSources) predecessor(name string) *tokensource.Source {
	if old, ok := ts.creds.Snapshot().Source(name); ok {
		return old
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	old := ts.retired[name]
	delete(ts.retired, name)
	if old != nil && time.Now().Before(old.ScrubUntil()) {
		return old
	}
	return nil
}

// storedValue follows an operator's write of credential cred to a
// store: a rotated refresh token kept for the source reading it (in
// memory, or sealed in the state database) is dropped, so that the
// value just stored is the one presented next.
func (ts *tokenSources) storedValue(ctx context.Context, cred string) {
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	ts.mu.Lock()
	var name string
	var d tokenDef
	for n, def := range ts.defs {
		if def.spec.RefreshToken == cred {
			name, d = n, def
		}
	}
	if name == "" {
		ts.mu.Unlock()
		return
	}
	delete(ts.rotated, name)
	ts.mu.Unlock()
	if len(d.sealed) > 0 {
		if err := ts.keep(ctx, name, d.gen, d.rv, nil); err != nil {
			ts.logger.Warn("the sealed refresh token was not dropped", zap.String("token_source", name), zap.Error(err))
		}
	}
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
		Exclusive:        func(ctx context.Context, fetch func() error) error { return ts.exclusive(ctx, name, gen, spec, fetch) },
		Defined:          defined,
	})
	if err != nil {
		return false, err
	}
	src.Inherit(ts.predecessor(name))
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

// lockRefresh takes the in-process lock of refresh_token credential
// cred; the returned func releases it.
func (ts *tokenSources) lockRefresh(ctx context.Context, cred string) (func(), error) {
	ts.mu.Lock()
	l, ok := ts.refreshLocks[cred]
	if !ok {
		l = make(chan struct{}, 1)
		ts.refreshLocks[cred] = l
	}
	ts.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// exclusive runs fetch of source name at generation gen (an
// oauth2_refresh) while no other fetch presents its refresh token: the
// in-process lock of the refresh_token credential (any Source reading
// it), then the fetch lease in the state database (any broker). A
// broker finding the lease held waits for it, up to
// tokensource.ExclusiveWait, then fails naming the credential; once it
// has the lease it first takes over a refresh token the other broker
// rotated meanwhile. Other kinds present no one-time token and run
// directly.
func (ts *tokenSources) exclusive(ctx context.Context, name string, gen int64, spec tokensource.Spec, fetch func() error) error {
	if spec.Kind != tokensource.KindOAuth2Refresh {
		return fetch()
	}
	wait, cancel := context.WithTimeout(ctx, tokensource.ExclusiveWait)
	defer cancel()
	unlock, err := ts.lockRefresh(wait, spec.RefreshToken)
	if err != nil {
		return fmt.Errorf("another fetch of refresh token credential %s did not end within %s", spec.RefreshToken, tokensource.ExclusiveWait)
	}
	defer unlock()
	owner := rand.Text()
	pause := fetchLeasePoll
	for {
		ok, row, found, err := ts.db.AcquireTokenSourceFetch(ctx, name, gen, owner, fetchLease)
		switch {
		case err != nil:
			return fmt.Errorf("taking the fetch lease of refresh token credential %s: %w", spec.RefreshToken, err)
		case !found:
			return errors.New("the token source was redefined or deleted meanwhile")
		case ok:
			ts.takeOver(ctx, row)
			defer func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if err := ts.db.ReleaseTokenSourceFetch(rctx, name, owner); err != nil {
					// It expires by itself after fetchLease.
					ts.logger.Warn("fetch lease not released", zap.String("token_source", name), zap.Error(err))
				}
			}()
			return fetch()
		}
		t := time.NewTimer(pause)
		select {
		case <-wait.Done():
			t.Stop()
			return fmt.Errorf("another broker is refreshing with refresh token credential %s and did not finish within %s", spec.RefreshToken, tokensource.ExclusiveWait)
		case <-t.C:
		}
		pause = min(2*pause, fetchLeasePollMax)
	}
}

// takeOver brings the kept refresh token of row's source to what the
// row holds when it is newer than what this broker has: the fetch
// about to run then presents the newest one. A rotation another broker
// wrote back to the built-in store is read from the database at once,
// not when the store's change feed arrives.
func (ts *tokenSources) takeOver(ctx context.Context, row state.TokenSourceRow) {
	ts.mu.Lock()
	d, had := ts.defs[row.Name]
	ts.mu.Unlock()
	if had && d.gen == row.Generation && d.rv < row.RefreshVersion && len(row.RefreshSealed) == 0 && ts.sealer != nil {
		if err := ts.reloadSealer(ctx); err != nil {
			ts.logger.Warn("built-in store not reloaded before a refresh", zap.String("token_source", row.Name), zap.Error(err))
		}
		ts.creds.Rebuild()
	}
	ts.putMu.Lock()
	defer ts.putMu.Unlock()
	ts.applyRow(row)
}

// reloadSealer re-reads the sealing store (the built-in one, where
// write-backs go) if it can.
func (ts *tokenSources) reloadSealer(ctx context.Context) error {
	if r, ok := ts.sealer.(storebackends.Reloader); ok {
		return r.Reload(ctx)
	}
	return nil
}

// sameRefreshSpec reports whether a and b take the refresh token from
// the same place (kind, token_url and refresh_token credential).
func sameRefreshSpec(a, b tokensource.Spec) bool {
	return a.Kind == b.Kind && a.TokenURL == b.TokenURL && a.RefreshToken == b.RefreshToken
}

// saveRefresh keeps a rotated refresh token of generation gen: in
// memory first (the old one may be dead already), then written back to
// the writable store when that store serves it (retried), otherwise,
// or when the write-back fails, sealed by the built-in store's key into
// the state database (which tells the other brokers). A fetch whose
// definition was redefined meanwhile (another generation, or another
// kind, token_url or refresh_token credential) or deleted keeps
// nothing. An error says where the token is not persisted.
func (ts *tokenSources) saveRefresh(ctx context.Context, name string, gen int64, spec tokensource.Spec, cred, v string) error {
	ts.mu.Lock()
	d, ok := ts.defs[name]
	if !ok || d.gen != gen || !sameRefreshSpec(d.spec, spec) {
		ts.mu.Unlock()
		return errors.New("the token source was redefined or deleted meanwhile: its rotated refresh token is not kept")
	}
	ts.rotated[name] = v
	ts.mu.Unlock()
	err := ts.persist(ctx, name, gen, spec, cred, v)
	if errors.Is(err, errNotPersisted) {
		go ts.retryPersist(name, gen, spec, cred, v)
		return fmt.Errorf("%w; retrying in the background", err)
	}
	return err
}

// errNotPersisted is persist's error when the rotated refresh token
// lives in this process's memory only.
var errNotPersisted = errors.New("not persisted (kept in memory only)")

// retryPersist retries persist in the background, with a doubling
// pause, until it works, the token is superseded (another rotation, a
// redefinition, a delete, an operator's PUT) or ts closes.
func (ts *tokenSources) retryPersist(name string, gen int64, spec tokensource.Spec, cred, v string) {
	pause := ts.persistPause
	for {
		t := time.NewTimer(pause)
		select {
		case <-ts.done:
			t.Stop()
			return
		case <-t.C:
		}
		pause = min(2*pause, persistRetryPauseMax)
		ts.mu.Lock()
		d, ok := ts.defs[name]
		current := ok && d.gen == gen && ts.rotated[name] == v
		ts.mu.Unlock()
		if !current {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), tokensource.FetchTimeout)
		err := ts.persist(ctx, name, gen, spec, cred, v)
		cancel()
		if err == nil {
			if src, ok := ts.creds.Snapshot().Source(name); ok {
				src.Saved()
			}
			return
		}
		ts.logger.Warn("rotated refresh token still not persisted", zap.String("token_source", name), zap.Error(err))
	}
}

// persist writes a rotated refresh token kept in memory to where it
// survives a restart (see saveRefresh).
func (ts *tokenSources) persist(ctx context.Context, name string, gen int64, spec tokensource.Spec, cred, v string) error {
	ts.mu.Lock()
	rv := ts.defs[name].rv
	ts.mu.Unlock()
	if ts.creds.WritableServes(cred) {
		err := ts.writeBack(ctx, cred, v)
		if err == nil {
			ts.mu.Lock()
			if ts.rotated[name] == v {
				delete(ts.rotated, name)
			}
			ts.mu.Unlock()
			// The other brokers read it from the store again, and a
			// token sealed before is dropped (it would win on restart).
			if err := ts.keep(ctx, name, gen, rv, nil); err != nil {
				return fmt.Errorf("the rotated refresh token was written back to credential %s, but the state database still holds an older one: %v", cred, err)
			}
			ts.logger.Info("rotated refresh token written back", zap.String("token_source", name), zap.String("credential", cred))
			return nil
		}
		if ts.sealer == nil {
			return fmt.Errorf("%w: writing it back to credential %s failed: %v", errNotPersisted, cred, err)
		}
		if serr := ts.keep(ctx, name, gen, rv, ts.sealer.SealAux(refreshPurpose(name, spec), []byte(v))); serr != nil {
			return fmt.Errorf("%w: writing it back to credential %s failed: %v; sealing it into the state database failed: %v", errNotPersisted, cred, err, serr)
		}
		ts.logger.Warn("rotated refresh token not written back, kept sealed in the state database instead",
			zap.String("token_source", name), zap.String("credential", cred), zap.Error(err))
		return nil
	}
	if ts.sealer == nil {
		return fmt.Errorf("%w: credential %s is in a read-only store and no built-in store is configured to seal the new one", errNotPersisted, cred)
	}
	if err := ts.keep(ctx, name, gen, rv, ts.sealer.SealAux(refreshPurpose(name, spec), []byte(v))); err != nil {
		return fmt.Errorf("%w: %v", errNotPersisted, err)
	}
	ts.logger.Info("rotated refresh token kept sealed in the state database", zap.String("token_source", name), zap.String("credential", cred))
	return nil
}

// writeBack writes a rotated refresh token to the writable store,
// retried with a doubling pause.
func (ts *tokenSources) writeBack(ctx context.Context, cred, v string) error {
	var err error
	pause := saveRefreshPause
	for try := 0; try < saveRefreshTries; try++ {
		if try > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
			pause *= 2
		}
		if _, _, err = ts.creds.Put(cred, v); err == nil {
			return nil
		}
	}
	return err
}

// keep records a rotation in the row of name at generation gen whose
// refresh_version is still rv: sealed, or nil when the store holds it.
func (ts *tokenSources) keep(ctx context.Context, name string, gen, rv int64, sealed []byte) error {
	found, err := ts.db.SetTokenSourceRefresh(ctx, name, gen, rv, sealed)
	if err == nil && !found {
		err = errors.New("the token source was redefined, deleted or given another refresh token meanwhile")
	}
	if err != nil {
		return err
	}
	ts.mu.Lock()
	if d, ok := ts.defs[name]; ok && d.gen == gen && d.rv == rv {
		d.sealed, d.rv = sealed, rv+1
		ts.defs[name] = d
	}
	ts.mu.Unlock()
	return nil
}

// sameRefresh reports whether old and spec take the refresh token from
// the same place (kind, token_url and refresh_token credential): a
// rotated refresh token kept for old then still holds.
func sameRefresh(old []byte, spec tokensource.Spec) bool {
	o, err := tokensource.ParseSpec(old)
	return err == nil && sameRefreshSpec(o, spec)
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
	gen, err := ts.db.PutTokenSource(ctx, name, doc, spec.RefreshToken, func(old []byte) bool { return sameRefresh(old, spec) })
	if errors.Is(err, state.ErrRefreshTaken) {
		return false, fmt.Errorf("%w: %v (a rotated refresh token works once: give each source its own)", credentials.ErrIsTokenSource, err)
	}
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
		d.sealed, d.rv = nil, 0
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
