package hashicorp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNewValidation(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func() Config {
		return Config{Address: "https://vault.example.com:8200", AuthMethod: AuthToken, Token: rootToken}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no address", func(c *Config) { c.Address = "" }, "address is required"},
		{"bad scheme", func(c *Config) { c.Address = "ftp://vault:8200" }, "must start with https://"},
		{"unix socket", func(c *Config) { c.Address = "unix:///run/vault.sock" }, "must start with https://"},
		{"no host", func(c *Config) { c.Address = "https://" }, "has no host"},
		{"credentials in URL", func(c *Config) { c.Address = "https://u:p@vault:8200" }, "must not contain credentials"},
		{"path in URL", func(c *Config) { c.Address = "https://vault:8200/v1" }, "scheme://host[:port] only"},
		{"query in URL", func(c *Config) { c.Address = "https://vault:8200?x=1" }, "scheme://host[:port] only"},
		{"plain http remote", func(c *Config) { c.Address = "http://vault.example.com:8200" }, "only allowed for a loopback address"},
		{"plain http private IP", func(c *Config) { c.Address = "http://10.0.0.5:8200" }, "only allowed for a loopback address"},
		{"no auth method", func(c *Config) { c.AuthMethod = "" }, "auth_method is required"},
		{"unknown auth method", func(c *Config) { c.AuthMethod = "userpass" }, `unknown auth_method "userpass"`},
		{"no token", func(c *Config) { c.Token = "" }, "token is required"},
		{"token with newline", func(c *Config) { c.Token = rootToken + "\n" }, "token contains spaces or non-printable"},
		{"token with approle fields", func(c *Config) { c.RoleID = roleID }, "only used with auth_method approle"},
		{"approle without secret id", func(c *Config) { useAppRole(c); c.SecretID = "" }, "role_id and secret_id are required"},
		{"approle with token", func(c *Config) { useAppRole(c); c.Token = rootToken }, "token is only used with auth_method token"},
		{"approle secret id with space", func(c *Config) { useAppRole(c); c.SecretID = "a b" + leakMarker }, "role_id or secret_id contains spaces"},
		{"auth mount without approle", func(c *Config) { c.AuthMount = "other" }, "auth_mount is only used with auth_method approle"},
		{"dot-dot in mount", func(c *Config) { c.Mount = "secret/../sys" }, `mount "secret/../sys"`},
		{"empty segment in path", func(c *Config) { c.Path = "a//b" }, "empty path segment"},
		{"control char in path", func(c *Config) { c.Path = "a\x00b" }, "control or invalid characters"},
		{"dot in namespace", func(c *Config) { c.Namespace = "team/./x" }, `namespace "team/./x"`},
		{"kv version", func(c *Config) { c.KVVersion = 3 }, "kv_version must be 1, 2 or 0"},
		{"name prefix", func(c *Config) { c.NamePrefix = "1X" }, "name_prefix"},
		{"name prefix dash", func(c *Config) { c.NamePrefix = "MY-" }, "name_prefix"},
		{"name mapping", func(c *Config) { c.NameMapping = "flat" }, `unknown name_mapping "flat"`},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout must not be negative"},
		{"missing CA file", func(c *Config) { c.CACertFile = "/nonexistent/ca.pem" }, "ca_cert"},
		{"CA file without certificate", func(c *Config) { c.CACertFile = notPEM }, "contains no PEM certificate"},
		{"TLS option on http", func(c *Config) { c.Address = "http://127.0.0.1:8200"; c.TLSServerName = "x" }, "need an https address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.mutate(&cfg)
			f, err := New(cfg)
			if err == nil {
				f.Close()
				t.Fatalf("New succeeded, want error containing %q", tt.want)
			}
			wantErr(t, err, tt.want)
		})
	}
}

func TestNewAcceptsAndNormalizes(t *testing.T) {
	for _, addr := range []string{"https://vault:8200", "https://vault:8200/", "http://127.0.0.1:8200", "http://[::1]:8200", "http://localhost:8200"} {
		f, err := New(Config{Address: addr, AuthMethod: AuthToken, Token: rootToken})
		if err != nil {
			t.Errorf("New(%s): %v", addr, err)
			continue
		}
		f.Close()
	}
	f, err := New(Config{
		Address: "https://vault:8200", AuthMethod: AuthAppRole, RoleID: roleID, SecretID: secretID,
		Mount: "/kv/team/", Path: "/agents/", Namespace: "ns1/",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := f.cfg
	if c.AuthMount != "approle" || c.Mount != "kv/team" || c.Path != "agents" || c.Namespace != "ns1" ||
		c.NameMapping != MapKey || c.Timeout != 10*time.Second {
		t.Errorf("normalized config = %+v", c)
	}
	if got := f.client.Headers().Get("X-Vault-Namespace"); got != "ns1" {
		t.Errorf("namespace header = %q", got)
	}
	if f.client.Token() != "" {
		t.Error("AppRole client starts with a token")
	}
	if tc := f.transport.TLSClientConfig; tc == nil || tc.InsecureSkipVerify || tc.RootCAs != nil {
		t.Errorf("TLS config = %+v, want verification with system roots", tc)
	}
}

func TestNewClearsEnvironmentCredentials(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "hvs.ENV-TOKEN-"+leakMarker)
	t.Setenv("VAULT_NAMESPACE", "env-ns")
	t.Setenv("VAULT_HEADERS", `{"X-Leak":"1"}`)
	f, err := New(Config{Address: "https://vault:8200", AuthMethod: AuthAppRole, RoleID: roleID, SecretID: secretID})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.client.Token() != "" {
		t.Errorf("client token came from VAULT_TOKEN")
	}
	h := f.client.Headers()
	if h.Get("X-Vault-Namespace") != "" || h.Get("X-Leak") != "" {
		t.Errorf("headers from the environment: %v", h)
	}
}

func TestNewReportsMalformedVaultEnvironment(t *testing.T) {
	t.Setenv("VAULT_SKIP_VERIFY", "perhaps")
	_, err := New(Config{Address: "https://vault:8200", AuthMethod: AuthToken, Token: rootToken})
	wantErr(t, err, "VAULT_* environment variables")
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"agents/github/token": "AGENTS_GITHUB_TOKEN",
		"my-app.v2/api key":   "MY_APP_V2_API_KEY",
		"ü/x":                 "__X",
		"Already_OK/K9":       "ALREADY_OK_K9",
	} {
		if got := envName(in); got != want {
			t.Errorf("envName(%q) = %q, want %q", in, got, want)
		}
	}
}
