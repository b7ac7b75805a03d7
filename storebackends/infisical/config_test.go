package infisical

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{AuthMethod: AuthUniversal, ClientID: clientID, ClientSecret: clientSecret, ProjectID: project, Environment: "prod"}
}

func TestNewValidation(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"bad scheme", func(c *Config) { c.SiteURL = "ftp://infisical.example" }, "must start with https://"},
		{"no host", func(c *Config) { c.SiteURL = "https://" }, "has no host"},
		{"credentials in URL", func(c *Config) { c.SiteURL = "https://u:p@infisical.example" }, "must not contain credentials"},
		{"path in URL", func(c *Config) { c.SiteURL = "https://infisical.example/api" }, "scheme://host[:port] only"},
		{"query in URL", func(c *Config) { c.SiteURL = "https://infisical.example?x=1" }, "scheme://host[:port] only"},
		{"plain http remote", func(c *Config) { c.SiteURL = "http://infisical.example" }, "only allowed for a loopback address"},
		{"plain http private IP", func(c *Config) { c.SiteURL = "http://10.0.0.5:8080" }, "only allowed for a loopback address"},
		{"no auth method", func(c *Config) { c.AuthMethod = "" }, "auth method is required"},
		{"unknown auth method", func(c *Config) { c.AuthMethod = "aws-iam" }, `unknown auth method "aws-iam"`},
		{"no client secret", func(c *Config) { c.ClientSecret = "" }, "client_id and client_secret are required"},
		{"secret with newline", func(c *Config) { c.ClientSecret += "\n" }, "contains spaces or non-printable"},
		{"universal with token", func(c *Config) { c.Token = staticToken }, "token is only used with token auth"},
		{"no token", func(c *Config) { useToken(c); c.Token = "" }, "token is required for token auth"},
		{"token with space", func(c *Config) { useToken(c); c.Token = "a LEAKMARKER" }, "token contains spaces"},
		{"token with client id", func(c *Config) { useToken(c); c.ClientID = clientID }, "only used with universal auth"},
		{"no project", func(c *Config) { c.ProjectID = "" }, "project_id is required"},
		{"no environment", func(c *Config) { c.Environment = "" }, "environment is required"},
		{"environment with space", func(c *Config) { c.Environment = "pro d" }, "must not contain spaces"},
		{"relative path", func(c *Config) { c.SecretPath = "agents" }, "must start with /"},
		{"dot-dot in path", func(c *Config) { c.SecretPath = "/agents/../other" }, `"." and ".." are not allowed`},
		{"empty segment", func(c *Config) { c.SecretPath = "/a//b" }, "empty segment"},
		{"control char in path", func(c *Config) { c.SecretPath = "/a\x00b" }, "control characters"},
		{"name prefix", func(c *Config) { c.NamePrefix = "1X" }, "name_prefix"},
		{"name prefix dash", func(c *Config) { c.NamePrefix = "MY-" }, "name_prefix"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout must not be negative"},
		{"missing CA file", func(c *Config) { c.CACertFile = "/nonexistent/ca.pem" }, "ca_cert"},
		{"CA file without certificate", func(c *Config) { c.CACertFile = notPEM }, "contains no PEM certificate"},
		{"TLS option on http", func(c *Config) { c.SiteURL = "http://127.0.0.1:8080"; c.TLSServerName = "x" }, "need an https site_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig()
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

func TestNewDefaultsAndNormalizes(t *testing.T) {
	f, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.cfg.SiteURL != DefaultSiteURL || f.cfg.SecretPath != "/" || f.cfg.Timeout != defaultTimeout || f.cfg.maxResponseBytes != defaultMaxResponseBytes {
		t.Errorf("defaults: %+v", f.cfg)
	}
	for in, want := range map[string]string{"/": "/", "/agents/": "/agents", "/a/b": "/a/b"} {
		cfg := validConfig()
		cfg.SecretPath = in
		f, err := New(cfg)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if f.cfg.SecretPath != want {
			t.Errorf("secret path %q -> %q, want %q", in, f.cfg.SecretPath, want)
		}
		f.Close()
	}
	for _, site := range []string{"https://eu.infisical.com", "https://infisical.example:8443/", "http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost:8080"} {
		cfg := validConfig()
		cfg.SiteURL = site
		f, err := New(cfg)
		if err != nil {
			t.Errorf("New(%s): %v", site, err)
			continue
		}
		f.Close()
	}
}
