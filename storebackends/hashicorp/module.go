package hashicorp

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/syncengine"
)

func init() {
	caddy.RegisterModule(new(Module))
}

// Module is the HashiCorp Vault credential store: it reads every secret
// under a KV (v1 or v2) path and keeps the values fresh through the
// shared sync engine. Each key of each secret becomes a credential.
type Module struct {
	// Name of this store in the API and in logs; needed when more than
	// one Vault store is configured. Default "hashicorp".
	Name string `json:"name,omitempty"`

	// Vault's address, e.g. https://vault.example.com:8200. Plain http
	// is accepted only for loopback addresses (a local dev server).
	Address string `json:"address,omitempty"`

	// Vault Enterprise namespace, sent as X-Vault-Namespace. Optional.
	Namespace string `json:"namespace,omitempty"`

	// How the store logs in to Vault.
	Auth Auth `json:"auth"`

	// KV mount to read. Default "secret".
	Mount string `json:"mount,omitempty"`

	// Path under the mount; every secret below it is read,
	// recursively. Default: the whole mount.
	Path string `json:"path,omitempty"`

	// KV engine version: 1, 2, or 0 to detect it from the mount.
	KVVersion int `json:"kv_version,omitempty"`

	// Prepended to every credential name.
	NamePrefix string `json:"name_prefix,omitempty"`

	// How credential names are made: "key" (default), the secret's key
	// itself; or "path_key", the secret's path below Path and the key,
	// upper-cased with other characters turned into '_'
	// (agents/github + token = AGENTS_GITHUB_TOKEN).
	NameMapping string `json:"name_mapping,omitempty"`

	// How often Vault is read. Default 30s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`

	// How long the last good snapshot may serve while Vault cannot be
	// read; past it, requests needing this store's credentials get 503.
	// Default 5m.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`

	// Timeout of each request to Vault. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Accept a sync that would remove every credential of the store.
	// Off by default: such a sync is refused and reported, because it
	// more often means a wrong path or policy than an intended purge.
	AllowEmpty bool `json:"allow_empty,omitempty"`

	// PEM file with the CA(s) to trust for Vault's TLS. Default: the
	// system roots. There is no option to skip verification.
	CACert string `json:"ca_cert,omitempty"`

	// Server name to verify Vault's certificate against, if it differs
	// from the address's host.
	TLSServerName string `json:"tls_server_name,omitempty"`

	fetcher *Fetcher
	*syncengine.Engine
	onChange atomic.Pointer[func()]
}

// Auth is the Vault login. Secret fields expand placeholders, so
// {env.VAULT_TOKEN} keeps them out of the JSON config; the *_file
// variants read a file (trailing newlines ignored) and win over the
// inline value.
type Auth struct {
	// "token" or "approle".
	Method string `json:"method"`

	// Token auth: the Vault token.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"token_file,omitempty"`

	// AppRole auth: the role and secret IDs, and the auth mount
	// (default "approle").
	RoleID       string `json:"role_id,omitempty"`
	RoleIDFile   string `json:"role_id_file,omitempty"`
	SecretID     string `json:"secret_id,omitempty"`
	SecretIDFile string `json:"secret_id_file,omitempty"`
	Mount        string `json:"mount,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agent_vault.stores.hashicorp",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision builds the fetcher and the sync engine and performs the
// first sync: a bad token, a bad secret_id or an unreachable Vault stops
// start-up here, with a message naming the store.
func (m *Module) Provision(ctx caddy.Context) error {
	if m.Name == "" {
		m.Name = "hashicorp"
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("store %q: "+format, append([]any{m.Name}, args...)...)
	}
	// Checked here, not in Validate: Caddy validates after Provision,
	// which is where the first sync already talks to Vault.
	if m.KVVersion < 0 || m.KVVersion > 2 {
		return fail("kv_version must be 1, 2 or 0 (detect)")
	}
	repl := caddy.NewReplacer()
	secret := func(field, inline, file string) (string, error) {
		f, err := repl.ReplaceOrErr(file, false, true)
		if err != nil {
			return "", fmt.Errorf("%s_file: %v", field, err)
		}
		if f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", fmt.Errorf("%s_file: %v", field, err)
			}
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		v, err := repl.ReplaceOrErr(inline, false, true)
		if err != nil {
			return "", fmt.Errorf("%s: %v", field, err)
		}
		return v, nil
	}
	cfg := Config{
		Name:          m.Name,
		Namespace:     m.Namespace,
		AuthMethod:    m.Auth.Method,
		AuthMount:     m.Auth.Mount,
		Mount:         m.Mount,
		Path:          m.Path,
		KVVersion:     m.KVVersion,
		NamePrefix:    m.NamePrefix,
		NameMapping:   m.NameMapping,
		Timeout:       time.Duration(m.Timeout),
		CACertFile:    m.CACert,
		TLSServerName: m.TLSServerName,
		Logger:        ctx.Logger(),
	}
	var err error
	if cfg.Address, err = repl.ReplaceOrErr(m.Address, false, true); err != nil {
		return fail("address: %v", err)
	}
	switch m.Auth.Method {
	case "token":
		if cfg.Token, err = secret("token", m.Auth.Token, m.Auth.TokenFile); err != nil {
			return fail("%v", err)
		}
		if cfg.Token == "" {
			return fail("token auth needs token or token_file (for example {env.VAULT_TOKEN})")
		}
	case "approle":
		if cfg.RoleID, err = secret("role_id", m.Auth.RoleID, m.Auth.RoleIDFile); err != nil {
			return fail("%v", err)
		}
		if cfg.SecretID, err = secret("secret_id", m.Auth.SecretID, m.Auth.SecretIDFile); err != nil {
			return fail("%v", err)
		}
		if cfg.RoleID == "" || cfg.SecretID == "" {
			return fail("approle auth needs role_id and secret_id (or their _file variants)")
		}
	default:
		return fail(`auth method must be "token" or "approle", got %q`, m.Auth.Method)
	}
	if m.fetcher, err = New(cfg); err != nil {
		return fail("%v", err)
	}
	// A whole sync must fit well inside max_staleness; without an
	// explicit timeout, take the engine's default or half the bound.
	syncTimeout := time.Duration(m.Timeout)
	if syncTimeout == 0 {
		syncTimeout = syncengine.DefaultTimeout
		if ms := time.Duration(m.MaxStaleness); ms > 0 && syncTimeout >= ms {
			syncTimeout = ms / 2
		}
	}
	m.Engine, err = syncengine.New(syncengine.Options{
		Store:        m.Name,
		Fetcher:      m.fetcher,
		Interval:     time.Duration(m.PollInterval),
		MaxStaleness: time.Duration(m.MaxStaleness),
		Timeout:      syncTimeout,
		AllowEmpty:   m.AllowEmpty,
		Logger:       ctx.Logger(),
		OnChange: func() {
			if f := m.onChange.Load(); f != nil {
				(*f)()
			}
		},
	})
	if err != nil {
		m.fetcher.Close()
		return err // names the store already
	}
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := m.Engine.Initial(initCtx); err != nil {
		m.fetcher.Close()
		return err // already names the store
	}
	return nil
}

// StoreName is the configured name of this store.
func (m *Module) StoreName() string { return m.Name }

// SetOnChange registers the app's rebuild function.
func (m *Module) SetOnChange(f func()) { m.onChange.Store(&f) }

// Health describes the store for the management API.
func (m *Module) Health(now time.Time) any { return m.Engine.Health(now) }

// LastSync is the start of the last successful sync.
func (m *Module) LastSync() time.Time { return m.Engine.Health(time.Now()).LastSuccess }

// Cleanup stops syncing and releases the Vault client.
func (m *Module) Cleanup() error {
	if m.Engine != nil {
		m.Engine.Stop()
	}
	if m.fetcher != nil {
		m.fetcher.Close()
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner    = (*Module)(nil)
	_ caddy.CleanerUpper   = (*Module)(nil)
	_ storebackends.Synced = (*Module)(nil)
	_ storebackends.Named  = (*Module)(nil)
)
