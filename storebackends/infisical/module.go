package infisical

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/storemodule"
)

func init() {
	caddy.RegisterModule(new(Module))
}

// Module is the Infisical credential store: it reads every secret of
// one project environment folder (and its imports) and keeps the values
// fresh through the shared sync engine. Each secret becomes a
// credential named by its key.
type Module struct {
	// The options every external store has: name (default
	// "infisical"), poll_interval, max_staleness, timeout, allow_empty.
	storemodule.SyncConfig

	// Infisical's address. Default https://app.infisical.com. Plain
	// http is accepted only for loopback addresses.
	SiteURL string `json:"site_url,omitempty"`

	// How the store authenticates.
	Auth Auth `json:"auth"`

	// The project (workspace) ID. Required.
	ProjectID string `json:"project_id,omitempty"`

	// The environment slug, e.g. "prod". Required.
	Environment string `json:"environment,omitempty"`

	// The folder to read. Default "/".
	SecretPath string `json:"secret_path,omitempty"`

	// Also read every folder below secret_path.
	Recursive bool `json:"recursive,omitempty"`

	// Prepended to every credential name.
	NamePrefix string `json:"name_prefix,omitempty"`

	// PEM file with the CA(s) to trust for Infisical's TLS. Default: the
	// system roots. There is no option to skip verification.
	CACert string `json:"ca_cert,omitempty"`

	// Server name to verify Infisical's certificate against, if it
	// differs from site_url's host.
	TLSServerName string `json:"tls_server_name,omitempty"`

	*storemodule.Synced
}

// Auth is the Infisical login. Fields expand placeholders, so
// {env.INFISICAL_CLIENT_SECRET} keeps secrets out of the JSON config;
// the *_file variants read a file (trailing newlines ignored) and win
// over the inline value.
type Auth struct {
	// "universal" (a machine identity's client ID and secret) or
	// "token" (an access token used as given).
	Method string `json:"method"`

	// Universal auth.
	ClientID         string `json:"client_id,omitempty"`
	ClientIDFile     string `json:"client_id_file,omitempty"`
	ClientSecret     string `json:"client_secret,omitempty"`
	ClientSecretFile string `json:"client_secret_file,omitempty"`

	// Token auth.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"token_file,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agent_vault.stores.infisical",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision checks the configuration, resolves the secret options and
// builds the fetcher, without contacting the store; Open logs in and
// performs the first sync.
func (m *Module) Provision(ctx caddy.Context) error {
	if m.Name == "" {
		m.Name = "infisical"
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("store %q: "+format, append([]any{m.Name}, args...)...)
	}
	cfg := Config{
		Name:          m.Name,
		AuthMethod:    m.Auth.Method,
		ProjectID:     m.ProjectID,
		Environment:   m.Environment,
		SecretPath:    m.SecretPath,
		Recursive:     m.Recursive,
		NamePrefix:    m.NamePrefix,
		Timeout:       m.RequestTimeout(),
		CACertFile:    m.CACert,
		TLSServerName: m.TLSServerName,
		Logger:        ctx.Logger(),
	}
	var err error
	if cfg.SiteURL, err = storemodule.Secret("site_url", m.SiteURL, ""); err != nil {
		return fail("%v", err)
	}
	// Only an absent site_url means Infisical Cloud: one that is set but
	// expands to nothing (an unset {env.X}) must not send the client
	// secret to a third party.
	if m.SiteURL != "" && cfg.SiteURL == "" {
		return fail("site_url %q expands to nothing; set it (or remove the option to use %s)", m.SiteURL, DefaultSiteURL)
	}
	switch m.Auth.Method {
	case AuthUniversal:
		err = storemodule.ResolveSecrets("universal",
			storemodule.SecretField{Name: "client_id", Inline: m.Auth.ClientID, File: m.Auth.ClientIDFile, Dst: &cfg.ClientID},
			storemodule.SecretField{Name: "client_secret", Inline: m.Auth.ClientSecret, File: m.Auth.ClientSecretFile, Dst: &cfg.ClientSecret})
	case AuthToken:
		err = storemodule.ResolveSecrets("token",
			storemodule.SecretField{Name: "token", Inline: m.Auth.Token, File: m.Auth.TokenFile, Dst: &cfg.Token})
	default:
		err = fmt.Errorf(`auth method must be "universal" or "token", got %q`, m.Auth.Method)
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

// Cleanup stops syncing and releases the HTTP client.
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
