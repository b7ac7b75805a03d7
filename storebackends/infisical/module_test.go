package infisical

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/storebackends/syncengine"
)

func provision(t *testing.T, m *Module) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	t.Cleanup(func() { m.Cleanup() })
	if err := m.Provision(ctx); err != nil {
		return err
	}
	return m.Open(t.TempDir())
}

// Provision resolves the secrets, Open logs in and performs the first sync;
// the module then serves the values as a named, synced store.
func TestProvision(t *testing.T) {
	stub := newStub(t)
	t.Setenv("INFISICAL_TEST_CLIENT_SECRET", clientSecret)
	idFile := filepath.Join(t.TempDir(), "client-id")
	if err := os.WriteFile(idFile, []byte(clientID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &Module{
		SiteURL:     stub.URL,
		Auth:        Auth{Method: AuthUniversal, ClientIDFile: idFile, ClientSecret: "{env.INFISICAL_TEST_CLIENT_SECRET}"},
		ProjectID:   project,
		Environment: "prod",
		SecretPath:  "/agents",
	}
	if err := provision(t, m); err != nil {
		t.Fatal(err)
	}
	if m.StoreName() != "infisical" {
		t.Errorf("store name %q", m.StoreName())
	}
	if v := m.Values(); v["GITHUB_TOKEN"] != "ghp_LEAKMARKER_1" || len(v) != 1 {
		t.Errorf("values %v", v)
	}
	meta := m.List()[0]
	if meta.Store != "infisical" || meta.Version != "1" || meta.Source != "prod:/agents/GITHUB_TOKEN" {
		t.Errorf("meta %+v", meta)
	}
	if h := m.Health(time.Now()); h.Status != syncengine.StatusOK {
		t.Errorf("health %+v", h)
	}
}

func TestProvisionFailures(t *testing.T) {
	stub := newStub(t)
	base := func() *Module {
		return &Module{
			SiteURL:     stub.URL,
			Auth:        Auth{Method: AuthUniversal, ClientID: clientID, ClientSecret: clientSecret},
			ProjectID:   project,
			Environment: "prod",
			SecretPath:  "/agents",
		}
	}
	tests := []struct {
		name   string
		mutate func(*Module)
		want   string
	}{
		{"bad client secret", func(m *Module) { m.Auth.ClientSecret = "cs-bad-LEAKMARKER" },
			`store "infisical": login failed: infisical universal auth login failed: Invalid credentials`},
		{"named store", func(m *Module) { m.Name = "team-a"; m.Auth.ClientSecret = "cs-bad-LEAKMARKER" }, `store "team-a": login failed`},
		{"unset env secret", func(m *Module) { m.Auth.ClientSecret = "{env.INFISICAL_TEST_UNSET_VARIABLE}" },
			`store "infisical": universal auth needs client_secret`},
		{"missing secret file", func(m *Module) { m.Auth.ClientSecretFile = "/nonexistent/secret" }, `store "infisical": client_secret_file:`},
		{"token without token", func(m *Module) { m.Auth = Auth{Method: AuthToken} }, `store "infisical": token auth needs token`},
		{"unknown method", func(m *Module) { m.Auth.Method = "kubernetes" }, `auth method must be "universal" or "token", got "kubernetes"`},
		{"bad config", func(m *Module) { m.SecretPath = "agents" }, `store "infisical": infisical: secret_path "agents" must start with /`},
		{"unreachable", func(m *Module) { m.SiteURL = "http://127.0.0.1:1" }, `store "infisical": login failed`},
		{"unknown folder", func(m *Module) { m.SecretPath = "/nope" }, `store "infisical": initial sync: fetch failed: listing secrets in prod:/nope`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			tt.mutate(m)
			err := provision(t, m)
			wantErr(t, err, tt.want)
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
		})
	}
}
