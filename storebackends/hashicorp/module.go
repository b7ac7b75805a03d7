package hashicorp

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/storemodule"
)

func init() {
	caddy.RegisterModule(new(Module))
}

// Module is the HashiCorp Vault credential store: it reads every secret
// under a KV (v1 or v2) path and keeps the values fresh through the
// shared sync engine. Each key of each secret becomes a credential.
type Module struct {
	// The options every external store has: name (default
	// "hashicorp"), poll_interval, max_staleness, timeout, allow_empty.
	storemodule.SyncConfig

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

	// PEM file with the CA(s) to trust for Vault's TLS. Default: the
	// system roots. There is no option to skip verification.
	CACert string `json:"ca_cert,omitempty"`

	// Server name to verify Vault's certificate against, if it differs
	// from the address's host.
	TLSServerName string `json:"tls_server_name,omitempty"`

	*storemodule.Synced
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

// Provision checks the configuration, resolves the secret options and
// builds the fetcher, without contacting the store; Open logs in and
// performs the first sync.
func (m *Module) Provision(ctx caddy.Context) error {
	if m.Name == "" {
		m.Name = "hashicorp"
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("store %q: "+format, append([]any{m.Name}, args...)...)
	}
	if m.KVVersion < 0 || m.KVVersion > 2 {
		return fail("kv_version must be 1, 2 or 0 (detect)")
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
		Timeout:       m.RequestTimeout(),
		CACertFile:    m.CACert,
		TLSServerName: m.TLSServerName,
		Logger:        ctx.Logger(),
	}
	var err error
	if cfg.Address, err = storemodule.Secret("address", m.Address, ""); err != nil {
		return fail("%v", err)
	}
	switch m.Auth.Method {
	case AuthToken:
		err = storemodule.ResolveSecrets("token",
			storemodule.SecretField{Name: "token", Inline: m.Auth.Token, File: m.Auth.TokenFile, Dst: &cfg.Token})
	case AuthAppRole:
		err = storemodule.ResolveSecrets("approle",
			storemodule.SecretField{Name: "role_id", Inline: m.Auth.RoleID, File: m.Auth.RoleIDFile, Dst: &cfg.RoleID},
			storemodule.SecretField{Name: "secret_id", Inline: m.Auth.SecretID, File: m.Auth.SecretIDFile, Dst: &cfg.SecretID})
	default:
		err = fmt.Errorf(`auth method must be "token" or "approle", got %q`, m.Auth.Method)
	}
	if err != nil {
		return fail("%v", err)
	}
	f, err := New(cfg)
	if err != nil {
		return fail("%v", err)
	}
	m.SyncConfig.Prepare(ctx, f, f.Close)
	return nil
}

// Open logs in and performs the first sync. The app calls it after its
// own configuration and files are checked, so a configuration that is
// wrong anyway fails before any request reaches the store.
func (m *Module) Open(string) error {
	var err error
	m.Synced, err = m.SyncConfig.Launch()
	return err // names the store already
}

// StoreName is the configured name (the app asks before Open).
func (m *Module) StoreName() string { return m.Name }

// Cleanup stops syncing and releases the Vault client.
func (m *Module) Cleanup() error {
	m.Synced.Cleanup()
	m.SyncConfig.Release()
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner    = (*Module)(nil)
	_ caddy.CleanerUpper   = (*Module)(nil)
	_ storebackends.Synced = (*Module)(nil)
	_ storebackends.Named  = (*Module)(nil)
	_ storebackends.Opener = (*Module)(nil)
)
