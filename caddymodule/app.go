// Package caddymodule holds the agent_vault Caddy app, the proxy and
// management API HTTP handlers, and their Caddyfile syntax.
package caddymodule

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/internal/datadir"
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
	maxSessionTTL     = 24 * time.Hour
	defaultLeafLife   = 24 * time.Hour
	sessionKeep       = time.Hour // how long ended sessions stay listed
)

// App is the agent_vault app: it owns the credential stores, the
// services (which hosts get which credential), the agent sessions and
// the certificate minter the proxy uses. The proxy and management API
// handlers find it with ctx.App("agent_vault").
type App struct {
	// Directory for the app's state: services.json, admin.token and the
	// built-in store's encrypted file. Placeholders such as
	// {env.AGENT_VAULT_DATA_DIR} are expanded. Default:
	// $AGENT_VAULT_DATA_DIR, else $XDG_DATA_HOME/agent-vault, else
	// ~/.local/share/agent-vault. Created with mode 0700.
	DataDir string `json:"data_dir,omitempty"`

	// Bearer token that authenticates the management API. Placeholders
	// are expanded, so {env.AGENT_VAULT_ADMIN_TOKEN} keeps the token out
	// of the JSON config. If empty, the token is read from
	// <data_dir>/admin.token, which is generated (mode 0600) on first
	// start. Must be at least 16 characters.
	AdminToken string `json:"admin_token,omitempty"`

	// Networks (CIDRs or single IPs, placeholders expanded, each entry
	// may itself be a comma-separated list) that upstreams may resolve
	// to even though they are private, loopback or link-local. Default
	// none: only public addresses are reachable through the proxy.
	AllowPrivateNetworks []string `json:"allow_private_networks,omitempty"`

	// ID of the CA in Caddy's pki app that signs the proxy's leaf
	// certificates. Default "agent_vault".
	CA string `json:"ca,omitempty"`

	// Validity of minted leaf certificates; always clamped to the CA
	// intermediate's expiry. Default 24h.
	LeafLifetime caddy.Duration `json:"leaf_lifetime,omitempty"`

	// Proxy URL handed to agents in new sessions (av-launch puts it in
	// HTTPS_PROXY). Placeholders are expanded. Default
	// http://127.0.0.1:14322.
	ProxyURL string `json:"proxy_url,omitempty"`

	// Session lifetime when a request does not ask for one. Default 1h.
	DefaultSessionTTL caddy.Duration `json:"default_session_ttl,omitempty"`

	// Longest session lifetime a request may ask for. Default 24h.
	MaxSessionTTL caddy.Duration `json:"max_session_ttl,omitempty"`

	// Credential stores, in priority order: when two stores hold the
	// same name, the earlier one wins. The first writable store receives
	// credentials written through the management API.
	StoresRaw []json.RawMessage `json:"stores,omitempty" caddy:"namespace=agent_vault.stores inline_key=backend"`

	stores  []namedStore
	ca      *caddypki.CA
	minter  *leafcerts.Minter
	egress  *egress.Policy
	logger  *zap.Logger
	*shared // sessions and services, kept across config reloads

	creds  atomic.Pointer[credSnapshot]
	credMu sync.Mutex // serialises credential writes and snapshot rebuilds
	// claims maps a credential name to the synced store that has listed
	// it (the highest-priority one). Such a name is never served from
	// another store, so that a secret deleted or broken in Vault does
	// not silently fall back to an older copy elsewhere.
	claims map[string]int // name -> index in stores

	stop chan struct{}
	done chan struct{}
}

type namedStore struct {
	name   string
	store  storebackends.Store
	synced storebackends.Synced // nil for stores without a sync engine
}

// credSnapshot is the in-memory view the proxy reads on every request:
// values by credential name and, for synced stores, the store each came
// from, whose freshness decides whether the value may still be used.
type credSnapshot struct {
	values map[string]string
	from   map[string]namedStore
	meta   []storebackends.Meta
}

// errUnknownCredential is a credential no store holds.
var errUnknownCredential = errors.New("credential is not available")

// lookup returns a credential's value, or why it cannot be used now: it
// does not exist, or its store is past its staleness bound (fail closed).
func (c *credSnapshot) lookup(name string, now time.Time) (string, error) {
	v, ok := c.values[name]
	if !ok {
		return "", errUnknownCredential
	}
	if st := c.from[name].synced; st != nil {
		if err := st.Fresh(now); err != nil {
			return "", err
		}
	}
	return v, nil
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agent_vault",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets the app up: expands placeholders, opens the data
// directory and stores, loads services and finds the CA. Every
// configuration error surfaces here, at start-up.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	var err error

	if a.DataDir, err = repl.ReplaceOrErr(a.DataDir, false, true); err != nil {
		return fmt.Errorf("data_dir: %v", err)
	}
	if a.DataDir == "" {
		a.DataDir = DefaultDataDir()
	}
	if a.DataDir == "" {
		return errors.New("data_dir: not configured and there is no home directory to default to")
	}
	if a.DataDir, err = filepath.Abs(a.DataDir); err != nil {
		return fmt.Errorf("data_dir: %v", err)
	}
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data_dir: %v", err)
	}

	if a.AdminToken, err = repl.ReplaceOrErr(a.AdminToken, false, true); err != nil {
		return fmt.Errorf("admin_token: %v", err)
	}
	if a.AdminToken == "" {
		if a.AdminToken, err = loadOrCreateAdminToken(filepath.Join(a.DataDir, "admin.token")); err != nil {
			return err
		}
	}
	if len(a.AdminToken) < 16 {
		return errors.New("admin_token must be at least 16 characters")
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
		a.MaxSessionTTL = caddy.Duration(maxSessionTTL)
	}
	if a.DefaultSessionTTL < 0 || a.MaxSessionTTL < 0 || a.DefaultSessionTTL > a.MaxSessionTTL {
		return fmt.Errorf("session lifetimes: need 0 < default_session_ttl (%s) <= max_session_ttl (%s)",
			time.Duration(a.DefaultSessionTTL), time.Duration(a.MaxSessionTTL))
	}
	if a.LeafLifetime == 0 {
		a.LeafLifetime = caddy.Duration(defaultLeafLife)
	}

	if err := a.provisionStores(ctx); err != nil {
		return err
	}
	if err := a.provisionCA(ctx); err != nil {
		return err
	}
	// Sessions and services outlive a config reload: an agent's session
	// must not end because the operator changed a timeout.
	val, _, err := sharedStates.LoadOrNew(a.DataDir, func() (caddy.Destructor, error) {
		sh := &shared{sessions: sessions.NewRegistry(), servicesPath: filepath.Join(a.DataDir, "services.json")}
		return sh, sh.loadServices()
	})
	if err != nil {
		return err
	}
	a.shared = val.(*shared)
	return nil
}

// sharedStates holds one *shared per data directory.
var sharedStates = caddy.NewUsagePool()

// shared is the part of the app's state that survives config reloads.
type shared struct {
	sessions     *sessions.Registry
	servicesPath string
	svcMu        sync.Mutex // serialises service writes and their file
	svcTable     atomic.Pointer[services.Table]
}

// Destruct runs when the last config using this data dir is gone:
// every session ends and its tunnels close.
func (sh *shared) Destruct() error {
	sh.sessions.RevokeAll()
	return nil
}

// Cleanup releases the app's hold on the shared state.
func (a *App) Cleanup() error {
	if a.shared != nil {
		_, err := sharedStates.Delete(a.DataDir)
		return err
	}
	return nil
}

func (a *App) provisionStores(ctx caddy.Context) error {
	if len(a.StoresRaw) == 0 {
		return errors.New("no credential store configured: add one, e.g. `store builtin` in the agent_vault global option")
	}
	mods, err := ctx.LoadModule(a, "StoresRaw")
	if err != nil {
		return fmt.Errorf("loading credential stores: %v", err)
	}
	seen := map[string]bool{}
	for i, m := range mods.([]any) {
		st, ok := m.(storebackends.Store)
		if !ok {
			return fmt.Errorf("store %d (%T) is not a credential store", i, m)
		}
		name := string(m.(caddy.Module).CaddyModule().ID.Name())
		if n, ok := m.(storebackends.Named); ok && n.StoreName() != "" {
			name = n.StoreName()
		}
		if seen[name] {
			return fmt.Errorf("store %q configured twice: give each store its own name", name)
		}
		seen[name] = true
		if op, ok := st.(storebackends.Opener); ok {
			if err := op.Open(a.DataDir); err != nil {
				return fmt.Errorf("store %q: %v", name, err)
			}
		}
		ns := namedStore{name: name, store: st}
		if sy, ok := st.(storebackends.Synced); ok {
			ns.synced = sy
			sy.SetOnChange(a.rebuildCredentials)
		}
		a.stores = append(a.stores, ns)
	}
	a.rebuildCredentials()
	return nil
}

func (a *App) provisionCA(ctx caddy.Context) error {
	if a.CA == "" {
		a.CA = DefaultCA
	}
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

// Start runs the session sweeper and the stores' sync loops.
func (a *App) Start() error {
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go a.sweepSessions()
	for _, ns := range a.stores {
		if ns.synced != nil {
			ns.synced.Start()
		}
	}
	a.logger.Info("agent vault ready",
		zap.String("data_dir", a.DataDir),
		zap.Int("stores", len(a.stores)),
		zap.Int("services", len(a.svcTable.Load().Services())),
		zap.Stringer("allow_private_networks", a.egress))
	return nil
}

// Stop ends the sweeper. Sessions end when the last config using the
// data dir is cleaned up (see shared.Destruct), not on a reload.
func (a *App) Stop() error {
	if a.stop != nil {
		close(a.stop)
		<-a.done
	}
	for _, ns := range a.stores {
		if ns.synced != nil {
			ns.synced.Stop()
		}
	}
	return nil
}

func (a *App) sweepSessions() {
	defer close(a.done)
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			if n := a.sessions.Sweep(sessionKeep); n > 0 {
				a.logger.Info("sessions expired", zap.Int("count", n))
			}
		}
	}
}

// rebuildCredentials refreshes the in-memory snapshot from the stores.
func (a *App) rebuildCredentials() {
	a.credMu.Lock()
	defer a.credMu.Unlock()
	if a.claims == nil {
		a.claims = map[string]int{}
	}
	lists := make([][]storebackends.Meta, len(a.stores))
	for i, ns := range a.stores {
		lists[i] = ns.store.List()
		if ns.synced == nil {
			continue
		}
		for _, m := range lists[i] {
			if owner, ok := a.claims[m.Name]; !ok || i < owner {
				a.claims[m.Name] = i
			}
		}
	}
	snap := &credSnapshot{values: map[string]string{}, from: map[string]namedStore{}}
	for i, ns := range a.stores {
		vals := ns.store.Values()
		for _, m := range lists[i] {
			if _, dup := snap.values[m.Name]; dup {
				continue // an earlier store wins
			}
			if owner, claimed := a.claims[m.Name]; claimed && owner != i {
				continue // owned by a synced store, even while it lacks a value
			}
			v, ok := vals[m.Name]
			if !ok {
				continue
			}
			snap.values[m.Name] = v
			snap.from[m.Name] = ns
			snap.meta = append(snap.meta, m)
		}
	}
	sort.Slice(snap.meta, func(i, j int) bool { return snap.meta[i].Name < snap.meta[j].Name })
	a.creds.Store(snap)
}

// StoreHealth describes every store, in priority order, and whether
// any of them is past its staleness bound.
func (a *App) StoreHealth(now time.Time) (list []storebackends.StoreStatus, stale bool) {
	for _, ns := range a.stores {
		if ns.synced == nil {
			n := 0
			for _, m := range a.creds.Load().meta {
				if m.Store == ns.name {
					n++
				}
			}
			_, writable := ns.store.(storebackends.Writable)
			list = append(list, storebackends.StoreStatus{Store: ns.name, Status: storebackends.StatusOK, Credentials: n, Writable: &writable})
			continue
		}
		if ns.synced.Fresh(now) != nil {
			stale = true
		}
		list = append(list, ns.synced.Health(now))
	}
	return list, stale
}

// writableStore returns the store that receives API writes.
func (a *App) writableStore() (string, storebackends.Writable, error) {
	for _, ns := range a.stores {
		if w, ok := ns.store.(storebackends.Writable); ok {
			return ns.name, w, nil
		}
	}
	return "", nil, errors.New("no writable credential store is configured")
}

// ErrShadowed is returned for a write the proxy would never use: the
// name belongs to another store.
var ErrShadowed = errors.New("credential name belongs to another store")

// PutCredential stores a credential in the writable store.
func (a *App) PutCredential(name, value string) (storebackends.Meta, error) {
	wname, w, err := a.writableStore()
	if err != nil {
		return storebackends.Meta{}, err
	}
	a.credMu.Lock()
	owner, claimed := a.claims[name]
	a.credMu.Unlock()
	if claimed && a.stores[owner].name != wname {
		return storebackends.Meta{}, fmt.Errorf("%w: %s comes from store %q, so a value written to %q would never be used", ErrShadowed, name, a.stores[owner].name, wname)
	}
	m, err := w.Put(name, value)
	// Rebuild even on error: a store may have changed (a write that
	// reached the disk but not its fsync) and the proxy must agree.
	a.rebuildCredentials()
	if err != nil {
		return m, err
	}
	a.logger.Info("credential stored", zap.String("name", name), zap.String("store", m.Store), zap.String("version", m.Version))
	return m, nil
}

// DeleteCredential removes a credential from the writable store.
func (a *App) DeleteCredential(name string) error {
	_, w, err := a.writableStore()
	if err != nil {
		return err
	}
	err = w.Delete(name)
	a.rebuildCredentials()
	if err != nil {
		return err
	}
	a.logger.Info("credential deleted", zap.String("name", name))
	return nil
}

// Credentials lists the metadata of every credential, with the last
// sync time of those that come from synced stores.
func (a *App) Credentials() []storebackends.Meta {
	snap := a.creds.Load()
	out := append([]storebackends.Meta(nil), snap.meta...)
	for i := range out {
		if st := snap.from[out[i].Name].synced; st != nil {
			if t := st.LastSync(); !t.IsZero() {
				out[i].SyncedAt = &t
			}
		}
	}
	return out
}

// loadServices reads services.json (services hold no secrets).
func (sh *shared) loadServices() error {
	var svcs []services.Service
	data, err := os.ReadFile(sh.servicesPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading services: %v", err)
	default:
		if err := json.Unmarshal(data, &svcs); err != nil {
			return fmt.Errorf("reading %s: %v", sh.servicesPath, err)
		}
	}
	t, err := services.NewTable(svcs)
	if err != nil {
		return fmt.Errorf("%s: %v", sh.servicesPath, err)
	}
	sh.svcTable.Store(t)
	return nil
}

// PutService creates or replaces a service, persisting the new set
// before it takes effect.
func (sh *shared) PutService(svc services.Service) error {
	sh.svcMu.Lock()
	defer sh.svcMu.Unlock()
	var next []services.Service
	for _, s := range sh.svcTable.Load().Services() {
		if s.Name != svc.Name {
			next = append(next, s)
		}
	}
	next = append(next, svc)
	return sh.commitServices(next)
}

// DeleteService removes a service; it reports whether it existed.
func (sh *shared) DeleteService(name string) (bool, error) {
	sh.svcMu.Lock()
	defer sh.svcMu.Unlock()
	var next []services.Service
	found := false
	for _, s := range sh.svcTable.Load().Services() {
		if s.Name == name {
			found = true
			continue
		}
		next = append(next, s)
	}
	if !found {
		return false, nil
	}
	return true, sh.commitServices(next)
}

func (sh *shared) commitServices(svcs []services.Service) error {
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	t, err := services.NewTable(svcs)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(svcs, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(sh.servicesPath, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving services: %v", err)
	}
	sh.svcTable.Store(t)
	return nil
}

// Services returns the current service table.
func (sh *shared) Services() *services.Table { return sh.svcTable.Load() }

// loadOrCreateAdminToken reads the admin token file, or creates it with
// a fresh random token on first start.
func loadOrCreateAdminToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			return "", fmt.Errorf("%s is empty: delete it to generate a new admin token", path)
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
	if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
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
