package caddymodule

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agentvault/caddy-agent-vault/internal/procguard"
)

// A configuration that is wrong anyway must fail before the app
// touches the disk or opens a store: no data dir, no admin.token.
func TestProvisionValidatesBeforeIO(t *testing.T) {
	for _, tc := range []struct {
		name string
		app  App
		want string
	}{
		{"short leaf lifetime", App{LeafLifetime: caddy.Duration(1e9)}, "leaf_lifetime"},
		{"bad network", App{AllowPrivateNetworks: []string{"10.1.2.3/8"}}, "allow_private_networks"},
		{"bad proxy url", App{ProxyURL: "https://x"}, "proxy_url"},
		{"ttls", App{DefaultSessionTTL: caddy.Duration(2e9), MaxSessionTTL: caddy.Duration(1e9)}, "session lifetimes"},
		{"short admin token", App{AdminToken: "short"}, "admin_token"},
		{"no store", App{}, "no credential store"},
		{"state backend", App{State: &StateConfig{Backend: "mysql"}}, "want sqlite or postgres"},
		{"postgres without dsn", App{State: &StateConfig{Backend: "postgres"}}, "needs a DSN"},
		{"sqlite with dsn", App{State: &StateConfig{Backend: "sqlite", DSN: "x"}}, "not a \"dsn\""},
		{"unset dsn placeholder", App{State: &StateConfig{Backend: "postgres", DSN: "{env.AGENT_VAULT_TEST_UNSET_DSN}"}}, "needs a DSN"},
		{"dsn that does not parse", App{State: &StateConfig{Backend: "postgres", DSN: "postgres://u:pw-not-shown@127.0.0.1:xx/db"}}, "state postgres: the DSN does not parse"},
		{"max_stale below the ping interval", App{State: &StateConfig{MaxStale: caddy.Duration(5e8)}}, "state sqlite: max_stale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			a := tc.app
			a.DataDir = dir
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := a.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Provision = %v, want an error about %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "pw-not-shown") {
				t.Fatalf("the DSN password is in the error: %v", err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("data dir was created (%v) for a configuration refused anyway", err)
			}
		})
	}
}

// A store configured with a bad option fails before the data dir is
// created too: store modules are provisioned before any file is made.
func TestProvisionStoreConfigBeforeFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a := App{DataDir: dir, StoresRaw: []json.RawMessage{json.RawMessage(`{"backend":"nosuchstore"}`)}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := a.Provision(ctx); err == nil {
		t.Fatal("unknown store backend accepted")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir was created (%v) before the store configuration was checked", err)
	}
}

// When procguard could not remove a secret variable from the
// environment others read, Provision's log says which, in one line;
// when it could, nothing is logged.
func TestWarnSecretsInEnviron(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	logger := zap.New(core)
	warnSecretsInEnviron(logger, func() ([]string, error) {
		return []string{"AGENT_VAULT_ADMIN_TOKEN"}, &procguard.WipeError{Vars: []string{"AGENT_VAULT_MASTER_PASSWORD", "VAULT_TOKEN"}, Reason: "test"}
	})
	entries := logs.TakeAll()
	if len(entries) != 1 || entries[0].Level != zap.WarnLevel {
		t.Fatalf("log %v, want one warning", entries)
	}
	msg := entries[0].ContextMap()["error"]
	if s, _ := msg.(string); !strings.Contains(s, "AGENT_VAULT_MASTER_PASSWORD, VAULT_TOKEN") || strings.Contains(s, "ADMIN") {
		t.Errorf("warning %q %v, want the variables left named and no others", entries[0].Message, entries[0].ContextMap())
	}
	warnSecretsInEnviron(logger, func() ([]string, error) { return []string{"AGENT_VAULT_MASTER_PASSWORD"}, nil })
	if n := logs.Len(); n != 0 {
		t.Errorf("%d lines logged after a complete wipe", n)
	}
}
