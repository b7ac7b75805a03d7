package statestorage

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	var m Module
	err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`agent_vault_state {
		dsn {env.AGENT_VAULT_DATABASE_URL}
		master_password {env.AGENT_VAULT_MASTER_PASSWORD}
		master_password_file
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.DSN != "{env.AGENT_VAULT_DATABASE_URL}" || m.MasterPassword != "{env.AGENT_VAULT_MASTER_PASSWORD}" || m.MasterPasswordFile != "" {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{
		"agent_vault_state postgres://x",
		"agent_vault_state {\n dsn a b\n}",
		"agent_vault_state {\n root /tmp\n}",
	} {
		var m Module
		if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// TestCaddyfileGlobalOption adapts a whole Caddyfile: the global
// storage option reaches the module by its name, and the adapted JSON
// keeps the placeholders, not the secrets.
func TestCaddyfileGlobalOption(t *testing.T) {
	t.Setenv("AGENT_VAULT_MASTER_PASSWORD", "hunter2-not-in-json")
	adapter := caddyconfig.GetAdapter("caddyfile")
	out, warnings, err := adapter.Adapt([]byte(`{
	storage agent_vault_state {
		dsn {env.AGENT_VAULT_DATABASE_URL}
		master_password {env.AGENT_VAULT_MASTER_PASSWORD}
	}
}
`), nil)
	if err != nil {
		t.Fatal(err, warnings)
	}
	var cfg struct {
		Storage map[string]string `json:"storage"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"module": "agent_vault_state", "dsn": "{env.AGENT_VAULT_DATABASE_URL}", "master_password": "{env.AGENT_VAULT_MASTER_PASSWORD}"}
	if len(cfg.Storage) != len(want) {
		t.Fatalf("storage = %v", cfg.Storage)
	}
	for k, v := range want {
		if cfg.Storage[k] != v {
			t.Fatalf("storage = %v", cfg.Storage)
		}
	}
}
