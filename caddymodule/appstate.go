package caddymodule

// The app's state database: its configuration, the state shared across
// config reloads (the database, the services, the sessions), and the
// import of an older release's files on first start.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/discovered"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/metrics"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/atomicfile"
	"github.com/agentvault/caddy-agent-vault/internal/periodic"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// State backends.
const (
	StateSQLite   = "sqlite"
	StatePostgres = "postgres"
)

// Defaults of StateConfig.
const (
	// defaultStateFile is the SQLite database's name in data_dir.
	defaultStateFile = "state.db"
	// defaultReloadInterval and defaultMaxStale are the state
	// package's defaults, repeated so the config documents them.
	defaultReloadInterval = state.DefaultReloadInterval
	defaultMaxStale       = state.DefaultMaxStale
	// stateOpenTimeout bounds connecting and migrating at start-up.
	stateOpenTimeout = time.Minute
)

// StateConfig says where the app keeps its state: services, sessions
// and the built-in store's sealed credentials. Brokers sharing one
// PostgreSQL database serve the same state; SQLite is for one broker.
type StateConfig struct {
	// "sqlite" or "postgres". Default "sqlite".
	Backend string `json:"backend,omitempty"`

	// The SQLite database file. Placeholders are expanded. Default
	// <data_dir>/state.db. Only for sqlite.
	Path string `json:"path,omitempty"`

	// The PostgreSQL connection string or URL. Placeholders are
	// expanded, so {env.AGENT_VAULT_DATABASE_URL} keeps its password
	// out of the config. Required for postgres; no default.
	DSN string `json:"dsn,omitempty"`

	// How often every cached part is reloaded in full from the
	// database, healing any missed change notification. Default 30s.
	// A config reload that changes it (or max_stale) reopens the
	// database; sessions and services carry over, as they are in it.
	ReloadInterval caddy.Duration `json:"reload_interval,omitempty"`

	// How long the database may be unreachable before the proxy
	// refuses every request (503) and /healthz says degraded: past it,
	// this broker may have missed a revocation. Default 1m.
	MaxStale caddy.Duration `json:"max_stale,omitempty"`
}

// checkState expands placeholders in the state config and fills in
// its defaults; it does no I/O.
func (a *App) checkState(repl *caddy.Replacer) error {
	if a.State == nil {
		a.State = new(StateConfig)
	}
	st := a.State
	var err error
	if st.Backend, err = repl.ReplaceOrErr(st.Backend, false, true); err != nil {
		return fmt.Errorf("state backend: %v", err)
	}
	if st.Backend == "" {
		st.Backend = StateSQLite
	}
	switch st.Backend {
	case StateSQLite:
		if st.DSN != "" {
			return errors.New(`state sqlite takes a file path ("path"), not a "dsn"`)
		}
		if st.Path, err = repl.ReplaceOrErr(st.Path, false, true); err != nil {
			return fmt.Errorf("state path: %v", err)
		}
		if strings.Contains(st.Path, "://") {
			// Not quoted: it is likely a connection URL with a password.
			return errors.New("state sqlite: the path is a URL; for PostgreSQL write `state postgres <dsn>`")
		}
		if st.Path == "" {
			st.Path = filepath.Join(a.DataDir, defaultStateFile)
		}
		if st.Path, err = filepath.Abs(st.Path); err != nil {
			return fmt.Errorf("state path: %v", err)
		}
	case StatePostgres:
		if st.Path != "" {
			return errors.New(`state postgres takes a "dsn", not a "path"`)
		}
		// The error never echoes the DSN: it may hold a password.
		if st.DSN, err = repl.ReplaceOrErr(st.DSN, false, true); err != nil {
			return errors.New("state dsn: a placeholder in it cannot be expanded")
		}
		if st.DSN == "" {
			return errors.New("state postgres needs a DSN, e.g. `state postgres {env.AGENT_VAULT_DATABASE_URL}` with AGENT_VAULT_DATABASE_URL set")
		}
	default:
		// Not quoted: arguments shifted by an empty one put a DSN,
		// password included, where the backend goes.
		return errors.New("state backend: want sqlite or postgres (the value given is not repeated, as it may be a connection string)")
	}
	if st.ReloadInterval < 0 || st.MaxStale < 0 {
		return errors.New("state reload_interval and max_stale must not be negative")
	}
	if st.ReloadInterval == 0 {
		st.ReloadInterval = caddy.Duration(defaultReloadInterval)
	}
	if st.MaxStale == 0 {
		st.MaxStale = caddy.Duration(defaultMaxStale)
	}
	// The state package's own checks (a DSN that does not parse, a
	// max_stale below its ping interval), still without I/O, so a bad
	// config fails before anything is opened. Its errors name the
	// backend and never the DSN's password.
	return st.config(nil).Validate()
}

// config is the state.Config for st, logging to logger.
func (st *StateConfig) config(logger *zap.Logger) state.Config {
	return state.Config{
		Backend:        st.Backend,
		DSN:            st.stateDSN(),
		Logger:         logger,
		ReloadInterval: time.Duration(st.ReloadInterval),
		MaxStale:       time.Duration(st.MaxStale),
	}
}

// stateDSN is what state.Config.DSN gets: the file or the DSN.
func (st *StateConfig) stateDSN() string {
	if st.Backend == StateSQLite {
		return st.Path
	}
	return st.DSN
}

// sharedStates holds one *sharedState per data directory and database.
var sharedStates = caddy.NewUsagePool()

// sharedKey identifies the shared state: a reload that points at
// another database, or changes how it is watched (reload_interval,
// max_stale, which the open database cannot change), gets a fresh one.
// Sessions and services are in the database, so they carry over; the
// old state is closed once the old config is cleaned up.
func (a *App) sharedKey() string {
	return strings.Join([]string{a.DataDir, a.State.Backend, a.State.stateDSN(),
		time.Duration(a.State.ReloadInterval).String(), time.Duration(a.State.MaxStale).String()}, "\x00")
}

// sharedState is the part of the app's state that survives config
// reloads: the database and what is cached from it (sessions must not
// end because the operator changed a timeout). It is one owned value
// per database, kept in sharedStates: the first config that uses the
// database creates it, the last one to let go destroys it. A config
// reaches it through App.state and never changes it: what belongs to
// one config (its credential stores and their subscription to the
// feed) lives in that config's App, so another config's failure or
// shutdown cannot take it away.
type sharedState struct {
	db       *state.DB
	sessions *sessions.Registry
	catalog  *catalog.Catalog
	// audit records management changes; its retry queue outlives a
	// config reload, as does logins, the failed-login limiter (a
	// reload must not reset an attacker's budget).
	audit  *audit.Recorder
	logins *identity.LoginLimiter
	// metrics' counters and registry outlive a config reload; each
	// config that starts gives them its own sources (metricswiring.go).
	metrics *metrics.Metrics
	measure *measured // which config's sources the metrics read
	// activity records what the proxy did (activitywiring.go); its
	// buffer outlives a config reload and is flushed by Destruct.
	activity *activityLog
	// discovered aggregates the hosts agents tried that nothing
	// covers; the sweeper merges it into the database every second.
	discovered *discovered.Tracker
	// retention and loginPurge delete what is old enough, at most once
	// per purgeEvery: kept here so that a config reload does not purge
	// again. The sweeper of each config calls them.
	retention  *audit.Retention
	loginPurge *loginPurge
	// auditLog paces the sweeper's log of the Recorder's counts;
	// auditLogged is what it logged last (guarded by auditLog).
	auditLog    periodic.Gate
	auditLogged audit.Stats
	// log is not any config's logger: the state outlives the config
	// that opened it, and that config's log writer may be closed.
	log *zap.Logger

	// One worker per topic: a services reload waiting on the database
	// never holds up a session's revocation.
	servicesFeed, sessionsFeed *changeWorker
	cancelFeed                 func()
	// staleAfter is how long a cache may go without a successful full
	// reload before health fails: a reload is due every
	// reload_interval, and may then fail for max_stale, as the
	// database may be unreachable for that long.
	staleAfter time.Duration
	health     *dbHealth // the database's health, as clients may see it
	// skipped are the stored services the first load could not read.
	skipped *catalog.SkippedError
}

// logSkipped reports the services the first load left out.
func (sh *sharedState) logSkipped() {
	if sh.skipped != nil {
		sh.log.Warn("stored services this broker cannot read are not served", zap.Strings("services", sh.skipped.Names), zap.Error(sh.skipped))
	}
}

// healthy is nil while the database is healthy and every shared cache
// has refreshed within staleAfter.
func (sh *sharedState) healthy() error {
	if err := sh.health.Healthy(); err != nil {
		return err
	}
	return sh.cacheHealth(sh.servicesFeed.stale(sh.staleAfter), sh.sessionsFeed.stale(sh.staleAfter))
}

// cacheHealth turns stale caches into the stateDown clients see (it
// holds no database detail, only what and for how long).
func (sh *sharedState) cacheHealth(errs ...error) error {
	if err := errors.Join(errs...); err != nil {
		return &stateDown{public: "state " + sh.db.Backend() + ": " + err.Error(), detail: err}
	}
	return nil
}

// namedReloader is a store that reloads when the feed names it.
type namedReloader struct {
	name string
	storebackends.Reloader
}

// stateLogger is the logger of the shared state and the database:
// Caddy's default logger, which no config reload closes.
func stateLogger() *zap.Logger { return caddy.Log().Named("agent_vault.state") }

// openShared opens the database, imports an older release's
// services.json on first start and loads the services and sessions.
func (a *App) openShared() (*sharedState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stateOpenTimeout)
	defer cancel()
	log := stateLogger()
	db, err := state.Open(ctx, a.State.config(log))
	if err != nil {
		return nil, err
	}
	sh, err := a.loadShared(ctx, db, sharedStores{catalog: catalogStore{db}, sessions: sessionStore{db}}, log)
	if err == nil {
		sh.logSkipped()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return sh, nil
}

// sharedStores are where the shared caches load from (the database's
// adapters; tests wrap them).
type sharedStores struct {
	catalog  catalog.Store
	sessions sessions.Store
	now      func() time.Time // the caches' freshness clock; nil is time.Now
}

// loadShared builds the shared state over db. It subscribes to the
// change feed before it reads anything: a change another broker makes
// during the load waits in the worker's queue and is applied right
// after it, instead of being missed until the next full reload.
func (a *App) loadShared(ctx context.Context, db *state.DB, stores sharedStores, log *zap.Logger) (*sharedState, error) {
	sh := &sharedState{db: db, log: log, logins: new(identity.LoginLimiter), metrics: metrics.New(metrics.Sources{})}
	sh.measure = &measured{m: sh.metrics}
	sh.audit = &audit.Recorder{Store: auditStore{db}, Logger: log.Named("audit")}
	sh.retention = &audit.Retention{Store: retentionDB{db}, Every: purgeEvery, Logger: log.Named("audit")}
	sh.loginPurge = newLoginPurge(retentionDB{db}, purgeEvery, nil, log)
	sh.auditLog.Every = auditLogEvery
	instance := ""
	if a.DataDir != "" {
		id, err := instanceID(a.DataDir)
		if err != nil {
			return nil, err
		}
		instance = id
	}
	sh.activity = newActivityLog(db, instance, log)
	sh.discovered = discovered.NewTracker(discoveredDB{db}, 0)
	maxStale, reload := defaultMaxStale, defaultReloadInterval
	if a.State != nil {
		maxStale, reload = time.Duration(a.State.MaxStale), time.Duration(a.State.ReloadInterval)
	}
	sh.staleAfter = reload + maxStale
	sh.health = &dbHealth{db: db, backend: db.Backend(), maxStale: maxStale, now: time.Now}
	sh.servicesFeed = newChangeWorker("services", log, sh.apply)
	sh.sessionsFeed = newChangeWorker("sessions", log, sh.apply)
	if stores.now != nil {
		sh.servicesFeed.now, sh.sessionsFeed.now = stores.now, stores.now
	}
	sh.cancelFeed = db.Subscribe(sh.route)
	fail := func(err error) (*sharedState, error) {
		sh.stopFeed()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownFlush)
		defer cancel()
		_ = sh.activity.close(ctx)
		return nil, err
	}
	empty, err := db.Empty(ctx)
	if err != nil {
		return fail(err)
	}
	if sh.catalog, err = catalog.Open(ctx, stores.catalog); err != nil && !errors.As(err, &sh.skipped) {
		return fail(err)
	}
	if err := a.importServices(ctx, db, sh.catalog, empty); err != nil {
		return fail(err)
	}
	sh.sessions = sessions.NewRegistry(stores.sessions)
	sh.sessions.Keep = sessionKeep
	sh.sessions.OnLeaseLapsed = func(ctx context.Context, s *sessions.Session) { recordLapsedLease(ctx, sh.audit, log, s) }
	if err := sh.sessions.Reload(ctx); err != nil {
		return fail(err)
	}
	sh.servicesFeed.start()
	sh.sessionsFeed.start()
	return sh, nil
}

// Meta keys of the services import.
const (
	// metaImportClaim holds the instance id (instanceID) of the data
	// dir whose files were (or are being) imported: the claim that
	// makes one broker the importer. Not the data dir's path: brokers
	// of a cluster often all use the same one (/data in a container).
	metaImportClaim = "services_import_claim"
	// metaServicesImported is set once every service is in.
	metaServicesImported = "services_imported_at"
)

// importServices copies <data_dir>/services.json of an older release
// into a new database, then renames it so it is not imported again
// (nor mistaken for the live services).
//
// Empty is not atomic: two brokers starting together on a new
// PostgreSQL database both see it empty. So the importer first claims
// the database for its data dir's instance id (first writer wins); a
// broker that lost the claim leaves its file alone. The claim also lets
// the same data dir finish an import that stopped half way (the puts
// are upserts of the same documents), until the import is marked done.
func (a *App) importServices(ctx context.Context, db *state.DB, cat *catalog.Catalog, empty bool) error {
	path := filepath.Join(a.DataDir, "services.json")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	skip := func(why string) error {
		a.logger.Warn("not importing the old services file: "+why, zap.String("file", path))
		return nil
	}
	id, err := instanceID(a.DataDir)
	if err != nil {
		return err
	}
	owner, claimed, err := db.Meta(ctx, metaImportClaim)
	if err != nil {
		return err
	}
	if !claimed {
		if !empty {
			return skip("the state database is in use already")
		}
		if owner, err = db.ClaimMeta(ctx, metaImportClaim, id); err != nil {
			return err
		}
	}
	if owner != id {
		return skip("the state database holds another broker's import")
	}
	if _, done, err := db.Meta(ctx, metaServicesImported); err != nil {
		return err
	} else if done {
		return skip("it was imported before")
	}
	svcs, err := catalog.ReadFile(path)
	if err != nil {
		return fmt.Errorf("importing services: %v", err)
	}
	for _, svc := range svcs {
		if err := cat.Put(ctx, svc); err != nil {
			return fmt.Errorf("importing services from %s: %v", path, err)
		}
	}
	now := time.Now()
	if err := db.SetMeta(ctx, metaServicesImported, strconv.FormatInt(now.Unix(), 10)); err != nil {
		return err
	}
	renamed := path + ".imported-" + strconv.FormatInt(now.Unix(), 10)
	if err := os.Rename(path, renamed); err != nil {
		return fmt.Errorf("imported %s, but renaming it failed (rename it yourself so it is not imported again): %v", path, err)
	}
	a.logger.Info("imported the old services file into the state database",
		zap.String("file", path), zap.String("renamed_to", renamed), zap.Int("services", len(svcs)))
	return nil
}

// instanceIDFile, in the data dir, names this data dir for good: a
// random id made on first use.
const instanceIDFile = "instance.id"

// instanceID returns the data dir's id, creating it on first use. Two
// brokers have different ids even when their data dirs have the same
// path (on different hosts or volumes); one data dir keeps its id
// across restarts.
func instanceID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, instanceIDFile)
	data, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(data)); len(id) >= 16 {
			return id, nil
		}
		return "", fmt.Errorf("%s holds no instance id: delete it to make a new one", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading the instance id: %v", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the instance id: %v", err)
	}
	return id, nil
}

// auditLogEvery is how often, at most, the sweeper logs the audit
// Recorder's counts (when entries wait or were lost).
const auditLogEvery = time.Minute

// auditStats are the audit Recorder's counts: entries waiting to be
// written, lost, and refused as a bug. The start-up log and the
// sweeper's log show them; a health page may too.
func (sh *sharedState) auditStats() audit.Stats { return sh.audit.Stats() }

// shutdownFlush bounds how long Destruct tries to write what is left.
const shutdownFlush = 5 * time.Second

// Destruct runs when the last config using this state is gone: unsaved
// session activity is flushed, the audit entries still queued are
// written (for up to shutdownFlush; those left are logged one by one),
// every session ends here (its tunnels close; the database keeps it for
// the next start), the activity log's buffer is written (what the
// closing tunnels logged included) and the database is closed.
func (sh *sharedState) Destruct() error {
	sh.stopFeed()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownFlush)
	defer cancel()
	if err := sh.sessions.FlushActivity(ctx); err != nil {
		sh.log.Warn("session activity not saved at shutdown", zap.Error(err))
	}
	if err := sh.sessions.RetryRevocations(ctx); err != nil {
		sh.log.Error("revocations not recorded in the state database at shutdown: other brokers still accept these sessions, and so will this one after a restart; revoke them again", zap.Error(err))
	}
	// A deadline of its own: a store that stays down must not take the
	// revocations' time above.
	actx, acancel := context.WithTimeout(context.Background(), shutdownFlush)
	defer acancel()
	if err := sh.audit.Flush(actx); err != nil {
		sh.log.Error("audit entries not recorded at shutdown", zap.Error(err))
	}
	// Ending the sessions closes their tunnels and requests, whose
	// exchanges then hand over their entries; the activity log waits
	// for them (bounded) and closes last before the database.
	sh.sessions.RevokeAll()
	if err := sh.activity.close(actx); err != nil {
		sh.log.Error("activity entries not written at shutdown", zap.Error(err))
	}
	if err := sh.discovered.Flush(actx); err != nil {
		sh.log.Warn("discovered hosts not saved at shutdown", zap.Error(err))
	}
	return sh.db.Close()
}
