// Package caddymodule holds the agent_vault Caddy app, the proxy and
// management API HTTP handlers, and their Caddyfile syntax.
package caddymodule

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/atomicfile"
	"github.com/agentvault/caddy-agent-vault/internal/datadir"
	"github.com/agentvault/caddy-agent-vault/internal/procguard"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

func init() {
	caddy.RegisterModule(new(App))
}

// Defaults for the App's optional fields.
const (
	DefaultCA         = "agent_vault"
	DefaultProxyURL   = "http://127.0.0.1:14322"
	defaultSessionTTL = time.Hour
	// defaultMaxSessionTTL is MaxSessionTTL's default.
	defaultMaxSessionTTL = 24 * time.Hour
	sessionKeep          = sessions.DefaultKeep // how long ended sessions stay listed
	// defaultSessionLeaseTimeout and minSessionLeaseTimeout bound
	// SessionLeaseTimeout: av-launch renews every third of it, so 5s
	// leaves a renewal more than a second.
	defaultSessionLeaseTimeout = 30 * time.Second
	minSessionLeaseTimeout     = 5 * time.Second
	// defaultOperatorLoginTTL and minOperatorLoginTTL bound OperatorLoginTTL.
	defaultOperatorLoginTTL = 12 * time.Hour
	minOperatorLoginTTL     = time.Minute
	// defaultAuditRetention (90 days) and minAuditRetention bound
	// AuditRetention; the sweeper purges once an hour.
	defaultAuditRetention = 90 * 24 * time.Hour
	minAuditRetention     = time.Hour
	// localAgentTokenFile, in data_dir, holds the local agent's token.
	localAgentTokenFile = "agent.token"
)

// App is the agent_vault app. It holds the configuration and wires the
// parts together: the credential stores (package credentials), the
// services (package catalog), the sessions and the certificate minter,
// and, over the state database, who may do what (package identity:
// agents, operators and their logins, access requests), the audit
// trail (package audit: its Recorder and Retention) and the local
// agent (made at Start, see localagent.go). The proxy and management
// API handlers find it with ctx.App("agent_vault") and take only the
// parts they use.
type App struct {
	// Directory for the app's files: admin.token, instance.id (this
	// broker's id: the actor of what it does on its own in the audit
	// trail), agent.token (the local agent's token, see LocalAgent)
	// and, with the default state backend, the SQLite state database
	// (state.db). An older release's services.json and
	// credentials.json found here are imported on first start.
	// Placeholders such as {env.AGENT_VAULT_DATA_DIR} are expanded.
	// Default: $AGENT_VAULT_DATA_DIR, else $XDG_DATA_HOME/agent-vault,
	// else ~/.local/share/agent-vault. Created with mode 0700.
	DataDir string `json:"data_dir,omitempty"`

	// Bearer token that authenticates the management API. Placeholders
	// are expanded, so {env.AGENT_VAULT_ADMIN_TOKEN} keeps the token out
	// of the JSON config. If empty, the token is read from
	// <data_dir>/admin.token, which is generated (mode 0600) on first
	// start. Must be at least 16 characters.
	AdminToken string `json:"admin_token,omitempty"`

	// Bearer token that lets a Prometheus scraper read GET /metrics on
	// the management API, and nothing else (a viewer's login, or the
	// admin token, reads it too). Placeholders are expanded, so
	// {env.AGENT_VAULT_METRICS_TOKEN} keeps it out of the config. The
	// admin token's rule applies: at least 16 characters, no spaces,
	// not an agent-vault token prefix; it must differ from the admin
	// token. Default empty: no metrics token, only a viewer or better.
	MetricsToken string `json:"metrics_token,omitempty"`

	// Networks (CIDRs or single IPs, placeholders expanded, each entry
	// may itself be a comma-separated list) that upstreams may resolve
	// to even though they are private, loopback or link-local. Default
	// none: only public addresses are reachable through the proxy.
	AllowPrivateNetworks []string `json:"allow_private_networks,omitempty"`

	// ID of the CA in Caddy's pki app that signs the proxy's leaf
	// certificates. Default "agent_vault".
	CA string `json:"ca,omitempty"`

	// Validity of minted leaf certificates; always clamped to the CA
	// intermediate's expiry. At least 1m. Default 24h.
	LeafLifetime caddy.Duration `json:"leaf_lifetime,omitempty"`

	// Proxy URL handed to agents in new sessions (av-launch puts it in
	// HTTPS_PROXY). Placeholders are expanded. Default
	// http://127.0.0.1:14322.
	ProxyURL string `json:"proxy_url,omitempty"`

	// Session lifetime when a request does not ask for one. Default 1h.
	DefaultSessionTTL caddy.Duration `json:"default_session_ttl,omitempty"`

	// Longest session lifetime a request may ask for, and the largest
	// max_session_ttl an agent may have. Default 24h.
	MaxSessionTTL caddy.Duration `json:"max_session_ttl,omitempty"`

	// How long a leased session (one opened with "lease": true, as
	// av-launch does) lives without a renewal: when its holder stops
	// renewing (killed, say), the broker ends it this long after the
	// last renewal and closes its tunnels. Default 30s; at least 5s.
	SessionLeaseTimeout caddy.Duration `json:"session_lease_timeout,omitempty"`

	// Name of the local agent: when the broker starts (not when a
	// config is only validated), if no agent of that name exists, it is
	// created with every service (["*"]), audited as the broker's
	// doing, and its token is written to <data_dir>/agent.token (mode
	// 0600), which av-launch reads by default, so agents on this machine
	// need not hold the admin token. An existing agent's token is never rotated by the
	// broker (other brokers of a cluster may hold it): if the file is
	// missing, a warning says how to make a new one. Anyone who can
	// read agent.token can open sessions for this agent's services.
	// Default: none (the example Caddyfile sets "local").
	LocalAgent string `json:"local_agent,omitempty"`

	// How long an operator's login (POST /api/v1/login) lasts before
	// the operator must log in again. Default 12h; at least 1m.
	OperatorLoginTTL caddy.Duration `json:"operator_login_ttl,omitempty"`

	// How long audit entries, and access requests (decided ones, and
	// pending ones nobody decided), are kept; older ones are deleted
	// (checked once an hour). Default 90 days (2160h, or "90d"); at
	// least 1h.
	AuditRetention caddy.Duration `json:"audit_retention,omitempty"`

	// How long the activity log's entries (one per proxied request or
	// refusal) are kept; older ones are deleted (checked every 5
	// minutes). Default 168h (7 days); at least 1h.
	ActivityRetention caddy.Duration `json:"activity_retention,omitempty"`

	// The most activity entries kept: beyond it the oldest are deleted
	// (checked every 5 minutes, so the log may briefly hold more), in
	// whole chunks of up to 64 entries, so up to 63 more stay. Default
	// 1000000 (also what 0 or leaving it out means); at least 1000.
	ActivityMaxRows int `json:"activity_max_rows,omitempty"`

	// Leaves the activity log out of the proxy: requests and refusals
	// are still counted by the metrics, but nothing is written to the
	// activity table (the API keeps answering with what is stored).
	// Default false: every proxied request and refusal is recorded.
	DisableActivityLog bool `json:"disable_activity_log,omitempty"`

	// Credential stores, in priority order: when two stores hold the
	// same name, the earlier one wins. The first writable store receives
	// credentials written through the management API.
	StoresRaw []json.RawMessage `json:"stores,omitempty" caddy:"namespace=agent_vault.stores inline_key=backend"`

	// Where services, sessions and the built-in store's sealed
	// credentials are kept (see StateConfig). Default: SQLite at
	// <data_dir>/state.db.
	State *StateConfig `json:"state,omitempty"`

	creds  *credentials.Set
	tokens *tokenSources // tokensourcewiring.go
	ca     *caddypki.CA
	minter *leafcerts.Minter
	egress *egress.Policy
	self   *egress.Listeners // the broker's own listen addresses, set in Start
	ctx    caddy.Context
	logger *zap.Logger
	// state is the state database, sessions and services, kept across
	// config reloads; owned by sharedStates, not by this config.
	state *sharedState
	// storeFeed applies credential changes to this config's stores;
	// cancelStoreFeed ends its subscription to the change feed (see
	// openStores). Both nil until then.
	storeFeed       *changeWorker
	cancelStoreFeed func()
	// tokenFeed applies token source changes (tokenSources.apply);
	// cancelTokenFeed ends its subscription.
	tokenFeed       *changeWorker
	cancelTokenFeed func()
	storesFed       bool // some store reloads from the feed, so its freshness counts for health

	stop chan struct{}
	done chan struct{}

	// instanceKey names the data dir lock this config holds a reference
	// on (instancelock.go); empty if none.
	instanceKey string

	// tunnels are this config's proxies' tunnel tables, counted by the
	// metrics at scrape time (metricswiring.go).
	tunnels *tunnelTables
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agent_vault",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets the app up. Every configuration error surfaces here,
// at start-up, and in an order that does no I/O for a configuration
// that is wrong anyway: first the checks that need nothing (placeholders,
// durations, addresses), then the store modules' own configuration,
// then files (data directory, admin token), then opening the stores
// (a password derivation, a Vault login, a first sync), then the CA.
func (a *App) Provision(ctx caddy.Context) error {
	// The app holds secrets: whatever binary embeds it, no same-user
	// process may read its memory or environment.
	procguard.NonDumpable()
	a.logger = ctx.Logger()
	warnSecretsInEnviron(a.logger, procguard.WipeResult)
	a.ctx = ctx
	a.self = new(egress.Listeners) // refuses every upstream until Start fills it in
	if err := a.checkConfig(); err != nil {
		return err
	}
	if len(a.StoresRaw) == 0 {
		return errors.New(`no credential store configured: add one, e.g. "store builtin" in the Caddyfile's agent_vault global option, or "stores": [{"backend": "builtin"}] in the app's JSON`)
	}
	mods, err := ctx.LoadModule(a, "StoresRaw")
	if err != nil {
		return fmt.Errorf("loading credential stores: %v", err)
	}
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data_dir: %v", err)
	}
	// One process per data dir: before anything in it is read or written.
	if err := a.lockInstance(); err != nil {
		return err
	}
	if a.AdminToken == "" {
		if a.AdminToken, err = loadOrCreateAdminToken(filepath.Join(a.DataDir, "admin.token")); err != nil {
			return err
		}
	}
	if a.MetricsToken != "" && a.MetricsToken == a.AdminToken {
		return errors.New("metrics_token: it is the admin token; give the scraper a token of its own")
	}
	// The database, sessions and services outlive a config reload: an
	// agent's session must not end because the operator changed a
	// timeout. Opened before the stores, which keep their records in it.
	val, _, err := sharedStates.LoadOrNew(a.sharedKey(), func() (caddy.Destructor, error) {
		return a.openShared()
	})
	if err != nil {
		return err
	}
	a.state = val.(*sharedState)
	if err := a.openStores(mods.([]any)); err != nil {
		return err
	}
	if err := a.openTokenSources(mods.([]any)); err != nil {
		return err
	}
	return a.provisionCA(ctx)
}

// warnSecretsInEnviron logs the secret variables procguard could not
// remove from the environment other processes read (see
// procguard.WipeResult): failing open must not be silent.
func warnSecretsInEnviron(logger *zap.Logger, result func() ([]string, error)) {
	if _, err := result(); err != nil {
		logger.Warn("secret environment variables remain readable in this process's environment; prefer AGENT_VAULT_MASTER_PASSWORD_FILE", zap.Error(err))
	}
}

// checkConfig expands placeholders, fills in defaults and checks every
// value that needs no I/O.
func (a *App) checkConfig() error {
	repl := caddy.NewReplacer()
	var err error
	if a.DataDir, err = ResolveDataDir(a.DataDir); err != nil {
		return err
	}

	if a.AdminToken, err = repl.ReplaceOrErr(a.AdminToken, false, true); err != nil {
		return fmt.Errorf("admin_token: %v", err)
	}
	if err := checkAdminToken(a.AdminToken); a.AdminToken != "" && err != nil {
		return fmt.Errorf("admin_token: %v", err)
	}
	if err := a.checkMetricsToken(repl); err != nil {
		return err
	}

	var allow []string
	for _, entry := range a.AllowPrivateNetworks {
		v, err := repl.ReplaceOrErr(entry, false, true)
		if err != nil {
			return fmt.Errorf("allow_private_networks: %v", err)
		}
		allow = append(allow, strings.Split(v, ",")...)
	}
	if a.egress, err = egress.ParsePolicy(allow); err != nil {
		return fmt.Errorf("allow_private_networks: %v", err)
	}

	if a.ProxyURL, err = repl.ReplaceOrErr(a.ProxyURL, false, true); err != nil {
		return fmt.Errorf("proxy_url: %v", err)
	}
	if a.ProxyURL == "" {
		a.ProxyURL = DefaultProxyURL
	}
	if err := validateProxyURL(a.ProxyURL); err != nil {
		return err
	}

	if a.DefaultSessionTTL == 0 {
		a.DefaultSessionTTL = caddy.Duration(defaultSessionTTL)
	}
	if a.MaxSessionTTL == 0 {
		a.MaxSessionTTL = caddy.Duration(defaultMaxSessionTTL)
	}
	if a.DefaultSessionTTL < 0 || a.MaxSessionTTL < 0 || a.DefaultSessionTTL > a.MaxSessionTTL {
		return fmt.Errorf("session lifetimes: need 0 < default_session_ttl (%s) <= max_session_ttl (%s)",
			time.Duration(a.DefaultSessionTTL), time.Duration(a.MaxSessionTTL))
	}
	if err := a.checkIdentityConfig(); err != nil {
		return err
	}
	if a.LeafLifetime == 0 {
		a.LeafLifetime = caddy.Duration(leafcerts.DefaultLifetime)
	}
	if err := checkLeafLifetime(a.LeafLifetime); err != nil {
		return err
	}
	if a.CA == "" {
		a.CA = DefaultCA
	}
	return a.checkState(repl)
}

// validateProxyURL checks the URL handed to agents: plain http to a
// host and port, nothing else (the agent speaks CONNECT to it).
func validateProxyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("proxy_url %q: want http://host:port", s)
	}
	return nil
}

// checkLeafLifetime is the one rule for App.LeafLifetime.
func checkLeafLifetime(d caddy.Duration) error {
	if time.Duration(d) < leafcerts.MinLifetime {
		return fmt.Errorf("leaf_lifetime %s: must be at least %s", time.Duration(d), leafcerts.MinLifetime)
	}
	return nil
}

// checkAdminToken is the rule for an admin token (identity's: 16 to
// 512 visible ASCII characters, and not shaped like an agent, login or
// session token, which the API tells apart by prefix and would never
// compare with the admin token).
func checkAdminToken(tok string) error { return identity.ValidAdminToken(tok) }

// checkIdentityConfig fills in and checks the fields of agents,
// operators, leases and the audit trail.
func (a *App) checkIdentityConfig() error {
	if a.LocalAgent != "" {
		if err := identity.ValidName(identity.AgentName, a.LocalAgent); err != nil {
			return fmt.Errorf("local_agent: %v", err)
		}
	}
	for _, f := range []struct {
		name     string
		dst      *caddy.Duration
		def, min time.Duration
	}{
		{"session_lease_timeout", &a.SessionLeaseTimeout, defaultSessionLeaseTimeout, minSessionLeaseTimeout},
		{"operator_login_ttl", &a.OperatorLoginTTL, defaultOperatorLoginTTL, minOperatorLoginTTL},
		{"audit_retention", &a.AuditRetention, defaultAuditRetention, minAuditRetention},
		{"activity_retention", &a.ActivityRetention, defaultActivityRetention, minActivityRetention},
	} {
		if *f.dst == 0 {
			*f.dst = caddy.Duration(f.def)
		}
		if time.Duration(*f.dst) < f.min {
			return fmt.Errorf("%s %s: must be at least %s", f.name, time.Duration(*f.dst), f.min)
		}
	}
	if a.ActivityMaxRows == 0 {
		a.ActivityMaxRows = defaultActivityMaxRows
	}
	if a.ActivityMaxRows < minActivityMaxRows {
		return fmt.Errorf("activity_max_rows %d: must be at least %d", a.ActivityMaxRows, minActivityMaxRows)
	}
	return nil
}

// openStores opens the provisioned store modules, in priority order,
// and merges them. Names are checked before any store is opened.
func (a *App) openStores(mods []any) error {
	var list []credentials.Store
	for i, m := range mods {
		st, ok := m.(storebackends.Store)
		if !ok {
			return fmt.Errorf("store %d (%T) is not a credential store", i, m)
		}
		name := string(m.(caddy.Module).CaddyModule().ID.Name())
		if n, ok := m.(storebackends.Named); ok && n.StoreName() != "" {
			name = n.StoreName()
		}
		list = append(list, credentials.Store{Name: name, Store: st})
	}
	if err := credentials.CheckNames(list); err != nil {
		return err
	}
	// Subscribed before any store reads its records, so a change saved
	// while they open waits in the queue; applied once all are open.
	var reloaders []namedReloader
	a.storeFeed = newChangeWorker("credentials", a.logger, func(ctx context.Context, ch state.Change) error {
		return reloadStores(ctx, reloaders, ch)
	})
	a.cancelStoreFeed = a.state.db.Subscribe(a.storeFeed.push)
	for _, st := range list {
		var err error
		switch op := st.Store.(type) {
		case storebackends.RecordsOpener:
			err = op.OpenRecords(builtinRecords{db: a.state.db, store: st.Name}, a.DataDir)
		case storebackends.Opener:
			err = op.Open(a.DataDir)
		default:
			continue
		}
		if r, ok := st.Store.(storebackends.Reloader); ok && err == nil {
			reloaders = append(reloaders, namedReloader{name: st.Name, Reloader: r})
		}
		if err != nil {
			// Synced stores name themselves in their errors already.
			if tag := fmt.Sprintf("store %q", st.Name); !strings.Contains(err.Error(), tag) {
				err = fmt.Errorf("%s: %v", tag, err)
			}
			return err
		}
	}
	a.storeFeed.start()
	a.storesFed = len(reloaders) > 0
	var err error
	a.creds, err = credentials.New(list)
	return err
}

func (a *App) provisionCA(ctx caddy.Context) error {
	pkiApp, err := ctx.App("pki")
	if err != nil {
		return fmt.Errorf("loading pki app: %v", err)
	}
	a.ca, err = pkiApp.(*caddypki.PKI).GetCA(ctx, a.CA)
	if err != nil {
		return fmt.Errorf("CA %q: %v", a.CA, err)
	}
	a.minter, err = leafcerts.New(func() ([]*x509.Certificate, crypto.Signer) {
		return a.ca.IntermediateCertificateChain(), a.ca.IntermediateKey()
	}, leafcerts.Options{Lifetime: time.Duration(a.LeafLifetime)})
	return err
}

// Cleanup ends this config's own subscription to the change feed (so
// a config that failed to start leaves the running one's alone) and
// releases its hold on the shared state, then on the data dir's
// instance lock.
func (a *App) Cleanup() error {
	defer a.unlockInstance()
	if a.cancelStoreFeed != nil {
		a.cancelStoreFeed()
		a.storeFeed.stop()
	}
	if a.cancelTokenFeed != nil {
		a.cancelTokenFeed()
		a.tokenFeed.stop()
	}
	if a.tokens != nil {
		a.tokens.close()
	}
	if a.state != nil {
		_, err := sharedStates.Delete(a.sharedKey())
		return err
	}
	return nil
}

// Start finds the broker's own listen addresses, which the proxy never
// connects to (see selflisteners.go), makes the local agent if there is
// none (localagent.go: at start, not at provision, so that `agent-vault
// validate` creates nothing), and runs the session sweeper and the
// stores' sync loops.
func (a *App) Start() error {
	if err := a.discoverListeners(); err != nil {
		return err
	}
	if err := a.provisionLocalAgent(); err != nil {
		return err
	}
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go a.sweepSessions()
	a.creds.Start()
	a.state.measure.start(a) // metricswiring.go
	st, act := a.state.auditStats(), a.ActivityStats()
	a.logger.Info("agent vault ready",
		zap.String("data_dir", a.DataDir),
		zap.Int("stores", a.creds.Len()),
		zap.Int("services", len(a.state.catalog.Services().Services())),
		zap.Stringer("allow_private_networks", a.egress),
		zap.Int("audit_queued", st.Queued), zap.Uint64("audit_dropped", st.Dropped), zap.Uint64("audit_refused", st.Refused),
		zap.Uint64("activity_written", act.Written), zap.Uint64("activity_dropped", act.Dropped),
		zap.Uint64("activity_failed", act.Failed), zap.Int("activity_queued", act.Queued),
		zap.Duration("activity_retention", time.Duration(a.ActivityRetention)), zap.Int("activity_max_rows", a.ActivityMaxRows))
	a.printStartSummary() // startsummary.go: the same, for a person
	return nil
}

// logAudit logs the audit Recorder's counts when entries wait to be
// written, or were lost or refused since the last time (at most once
// per auditLogEvery): an audit trail that is not being written must
// not go unnoticed.
func (a *App) logAudit() {
	a.state.auditLog.Run(context.Background(), func(context.Context, time.Time) error {
		st := a.state.auditStats()
		if st.Queued == 0 && st == a.state.auditLogged {
			return nil
		}
		a.state.auditLogged = st
		a.logger.Warn("audit entries not written yet, or lost", zap.Int("audit_queued", st.Queued),
			zap.Uint64("audit_dropped", st.Dropped), zap.Uint64("audit_refused", st.Refused))
		return nil
	})
}

// Stop ends the sweeper and the stores' sync loops. Sessions end when
// the last config using the same state database is cleaned up (see
// sharedState.Destruct), not on a reload.
func (a *App) Stop() error {
	if a.stop != nil {
		close(a.stop)
		<-a.done
	}
	a.creds.Stop()
	a.state.measure.stop(a)
	return nil
}

func (a *App) sweepSessions() {
	defer close(a.done)
	// Health is watched on its own, so database calls of the sweep that
	// wait for their deadline never delay closing connections.
	watched := make(chan struct{})
	go a.watchHealth(watched)
	defer func() { <-watched }()
	// Every second: an expired session's open tunnels and streams end
	// within a second of its expiry, and the requests counted since the
	// last tick are saved in one batch.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastErr string // logged once per distinct failure, not every second
	// Each database call has a deadline of its own: a slow purge must
	// not starve the activity flush of its time.
	call := func(f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), sweepCallTimeout)
		defer cancel()
		return f(ctx)
	}
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			reg := a.state.sessions
			err := errors.Join(
				call(func(ctx context.Context) error {
					res, err := reg.Sweep(ctx)
					if res.Expired > 0 {
						a.logger.Info("sessions expired", zap.Int("count", res.Expired))
					}
					// Lapsed leases are audited by the registry's
					// OnLeaseLapsed (see loadShared), before they close.
					if res.LeaseLapsed > 0 {
						a.logger.Info("sessions ended: their leases lapsed", zap.Int("count", res.LeaseLapsed))
					}
					return err
				}),
				call(reg.FlushActivity),
				call(reg.RetryRevocations),
				call(a.state.audit.Retry),
				call(func(ctx context.Context) error { return a.state.retention.Purge(ctx, time.Duration(a.AuditRetention)) }),
				call(a.state.loginPurge.Purge),
				call(a.state.discovered.Flush))
			a.logAudit()
			a.state.activity.purge(time.Duration(a.ActivityRetention), a.ActivityMaxRows)
			a.state.activity.logLosses()
			switch {
			case err != nil && err.Error() != lastErr:
				a.logger.Warn("saving session activity or revocations failed; kept for the next try", zap.Error(err))
				lastErr = err.Error()
			case err == nil && lastErr != "":
				a.logger.Info("session activity and revocations saved again")
				lastErr = ""
			}
		}
	}
}

// sweepCallTimeout bounds each database call of the sweeper.
const sweepCallTimeout = 3 * time.Second

// recordLapsedLease records session.lease_expired for a session a
// sweep ends because its lease lapsed (the registry's OnLeaseLapsed).
// The actor is the session (its agent), whose holder stopped renewing.
func recordLapsedLease(ctx context.Context, rec *audit.Recorder, log *zap.Logger, s *sessions.Session) {
	p := identity.SessionPrincipal(s.ID, s.Agent)
	log.Info("session ended: its lease was not renewed", zap.String("session", s.ID), zap.String("agent", s.Agent),
		zap.Duration("lease_timeout", s.LeaseTimeout))
	rec.Record(ctx, audit.Entry{Actor: p.Actor(), ActorKind: p.ActorKind(), Action: audit.SessionLeaseExpired,
		Target: s.ID, Detail: "not renewed within " + apiwire.FormatDuration(s.LeaseTimeout)})
}

// purgeEvery is how often the sweeper deletes old audit entries and
// access requests (audit.Retention) and expired logins (loginPurge).
const purgeEvery = time.Hour

// watchHealth closes every open connection within a second of the
// state turning unhealthy (see healthGuard), until Stop.
func (a *App) watchHealth(done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	guard := &healthGuard{health: a, conns: a.state.sessions, log: a.logger}
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			guard.check()
		}
	}
}

// Healthy is the state health the proxy's gate and /healthz use: nil
// while the state database answers and every cache this config serves
// from (services, sessions, its stores' credentials) has refreshed from
// it recently enough (see sharedState.staleAfter).
func (a *App) Healthy() error {
	if err := a.state.healthy(); err != nil {
		return err
	}
	if a.storeFeed != nil && a.storesFed {
		return a.state.cacheHealth(a.storeFeed.stale(a.state.staleAfter))
	}
	return nil
}

// proxyDeps is what the proxy handler uses of the app.
func (a *App) proxyDeps() proxyDeps {
	return proxyDeps{sessions: a.state.sessions, services: a.state.catalog, creds: a.creds, leaves: a.minter, egress: a.egress, self: a.self, state: a,
		observe:   proxyObservers(a.DisableActivityLog, a.state.activity.rec, a.state.metrics, a.state.discovered),
		exchanges: &a.state.activity.exchanges}
}

// apiDeps is what the management API handler uses of the app.
func (a *App) apiDeps() apiDeps {
	return apiDeps{
		adminToken:   a.AdminToken,
		creds:        a.creds,
		tokens:       a.tokens,
		catalog:      a.state.catalog,
		sessions:     a.state.sessions,
		rootPEM:      a.rootPEM,
		proxyURL:     a.ProxyURL,
		defaultTTL:   time.Duration(a.DefaultSessionTTL),
		maxTTL:       time.Duration(a.MaxSessionTTL),
		leaseTimeout: time.Duration(a.SessionLeaseTimeout),
		loginTTL:     time.Duration(a.OperatorLoginTTL),
		ids:          identityDB{a.state.db},
		audit:        a.state.audit,
		logins:       a.state.logins,
		state:        a,
		metrics:      a.state.metrics,
		metricsToken: a.MetricsToken,
		activity:     activityDB{a.state.db},
		discovered:   discoveredDB{a.state.db},
		// Through the App: the shared state's Recorder.
		activityStats: a.ActivityStats,
	}
}

// rootPEM returns the CA root certificate agents must trust.
func (a *App) rootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ca.RootCertificate().Raw})
}

// loadOrCreateAdminToken reads the admin token file, or creates it with
// a fresh random token on first start.
func loadOrCreateAdminToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(data))
		if err := checkAdminToken(tok); err != nil {
			return "", fmt.Errorf("%s holds no usable admin token (%v): delete it to generate a new one", path, err)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading admin token: %v", err)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := "ava_" + hex.EncodeToString(b)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing admin token: %v", err)
	}
	return tok, nil
}

// DefaultDataDir is the per-user data directory used when none is
// configured (see internal/datadir; av-launch applies the same rule).
func DefaultDataDir() string { return datadir.Default(os.Getenv) }

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
