package caddymodule

// Config reloads of a whole broker (caddy.Load), as an operator makes
// them: what a reload that fails, or one that changes the state
// settings, does to the running broker.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"

	_ "github.com/agentvault/caddy-agent-vault/storebackends/builtin"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
)

func init() {
	caddy.RegisterModule(failStartApp{})
	caddy.RegisterModule(midProvisionApp{})
}

// failStartApp is an app whose Start fails, as the http app's does for
// a listen address that cannot be bound: Caddy then stops the apps of
// the new config that did start and keeps the running config.
type failStartApp struct{}

func (failStartApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "test_failstart", New: func() caddy.Module { return new(failStartApp) }}
}
func (failStartApp) Start() error { return errors.New("test: this app does not start") }
func (failStartApp) Stop() error  { return nil }

// midProvisionApp runs during the new config's provisioning, after its
// agent_vault app (and so its stores) is provisioned and before
// anything starts: what another broker writes then must reach the new
// config.
type midProvisionApp struct{}

// midProvision is what midProvisionApp does, set by the test.
var midProvision func(a *App) error

func (midProvisionApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "test_midprovision", New: func() caddy.Module { return new(midProvisionApp) }}
}
func (midProvisionApp) Provision(ctx caddy.Context) error {
	a, err := ctx.App("agent_vault")
	if err != nil {
		return err
	}
	return midProvision(a.(*App))
}
func (midProvisionApp) Start() error { return nil }
func (midProvisionApp) Stop() error  { return nil }

// freeAddr is a free loopback address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// brokerConfig is a whole broker's JSON config: the app with a built-in
// store in dir, the pki app, the API and the proxy. ttl varies the
// config so every load is a change; state is the app's state object;
// extraApps is appended to "apps".
type brokerConfig struct {
	dir, api, proxy string
	ttl             int
	state           string
	extraApps       string
}

func (c brokerConfig) json() []byte {
	state := c.state
	if state == "" {
		state = `{"reload_interval": "1h"}`
	}
	return []byte(fmt.Sprintf(`{
 "admin": {"disabled": true},
 "storage": {"module": "file_system", "root": %q},
 "apps": {
  "agent_vault": {"data_dir": %q, "admin_token": "0123456789abcdef0123", "default_session_ttl": "%dm",
    "stores": [{"backend": "builtin", "master_password": "pw"}], "state": %s},
  "pki": {"certificate_authorities": {"agent_vault": {"install_trust": false}}},
  "http": {"servers": {
    "api": {"listen": [%q], "routes": [{"handle": [{"handler": "agent_vault_api"}]}]},
    "px": {"listen": [%q], "routes": [{"handle": [{"handler": "agent_vault_proxy"}]}]}}}
  %s
 }}`, filepath.Join(c.dir, "caddy"), c.dir, c.ttl, state, c.api, c.proxy, c.extraApps))
}

// runBroker loads cfg and stops it when the test ends.
func runBroker(t *testing.T, cfg brokerConfig) {
	t.Helper()
	if err := caddy.Load(cfg.json(), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
}

func activeApp(t *testing.T) *App {
	t.Helper()
	a, err := caddy.ActiveContext().App("agent_vault")
	if err != nil {
		t.Fatal(err)
	}
	return a.(*App)
}

// eventually fails the test unless cond holds within d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling, not synchronisation
	}
}

// A reload that fails to start must leave the running config exactly
// as it was: in particular its built-in store keeps hearing what other
// brokers change (here a credential deleted in the database), with no
// full reload to help (reload_interval 1h).
func TestFailedReloadKeepsStoreFeed(t *testing.T) {
	cfg := brokerConfig{dir: t.TempDir(), api: freeAddr(t), proxy: freeAddr(t), ttl: 60}
	runBroker(t, cfg)
	a := activeApp(t)
	if _, _, err := a.creds.Put("TOKEN", "s3cret-value"); err != nil {
		t.Fatal(err)
	}
	// Apps start in map order, so the new agent_vault app starts (and
	// is stopped again) before the failing one in some of the tries.
	bad := cfg
	bad.ttl, bad.extraApps = 61, `, "test_failstart": {}`
	for range 10 {
		if err := caddy.Load(bad.json(), true); err == nil {
			t.Fatal("a config whose app fails to start was loaded")
		}
		if activeApp(t) != a {
			t.Fatal("the running config was replaced")
		}
	}
	// Another broker deletes the credential.
	if _, err := a.state.db.DeleteCredential(context.Background(), "builtin", "TOKEN"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the running config stops serving the deleted credential", func() bool {
		return !a.creds.Snapshot().Has("TOKEN")
	})
}

// A credential another broker deletes while a new config is being
// provisioned (its store already opened) is not served by that config.
func TestReloadWindowCredentialChange(t *testing.T) {
	cfg := brokerConfig{dir: t.TempDir(), api: freeAddr(t), proxy: freeAddr(t), ttl: 60}
	runBroker(t, cfg)
	if _, _, err := activeApp(t).creds.Put("TOKEN", "s3cret-value"); err != nil {
		t.Fatal(err)
	}
	midProvision = func(a *App) error {
		_, err := a.state.db.DeleteCredential(context.Background(), "builtin", "TOKEN")
		return err
	}
	defer func() { midProvision = nil }()
	next := cfg
	next.ttl, next.extraApps = 61, `, "test_midprovision": {}`
	if err := caddy.Load(next.json(), true); err != nil {
		t.Fatal(err)
	}
	a := activeApp(t)
	eventually(t, 5*time.Second, "the new config stops serving the credential deleted while it was provisioned", func() bool {
		return !a.creds.Snapshot().Has("TOKEN")
	})
}

// A reload that changes max_stale or reload_interval applies it (the
// database is reopened with it), and sessions carry over.
func TestReloadAppliesStateSettings(t *testing.T) {
	cfg := brokerConfig{dir: t.TempDir(), api: freeAddr(t), proxy: freeAddr(t), ttl: 60,
		state: `{"reload_interval": "1h", "max_stale": "1m"}`}
	runBroker(t, cfg)
	before := activeApp(t)
	sess, token, err := before.state.sessions.Create(context.Background(), sessions.Spec{Services: []string{}, TTL: time.Hour, NewPlaceholder: func() (string, error) { return "ph", nil }})
	if err != nil {
		t.Fatal(err)
	}
	next := cfg
	next.state = `{"reload_interval": "1h", "max_stale": "2m"}`
	if err := caddy.Load(next.json(), true); err != nil {
		t.Fatal(err)
	}
	after := activeApp(t)
	if after.state == before.state || after.state.staleAfter != time.Hour+2*time.Minute {
		t.Fatalf("max_stale not applied: same state %v, staleness bound %v", after.state == before.state, after.state.staleAfter)
	}
	if got, err := after.state.sessions.Authenticate(token); err != nil || got.ID != sess.ID {
		t.Fatalf("the session after the reload: %v", err)
	}
}
