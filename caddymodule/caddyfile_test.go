package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestAppCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`agent_vault {
		data_dir /var/lib/av
		admin_token {env.TOKEN}
		allow_private_networks 10.0.0.0/8 127.0.0.1
		proxy_url http://127.0.0.1:9
		leaf_lifetime 2h
		default_session_ttl 10m
		max_session_ttl 2h
		ca other
		proxy_url
	}`)
	var a App
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if a.DataDir != "/var/lib/av" || a.AdminToken != "{env.TOKEN}" || a.CA != "other" ||
		len(a.AllowPrivateNetworks) != 2 || a.ProxyURL != "http://127.0.0.1:9" ||
		time.Duration(a.LeafLifetime) != 2*time.Hour || time.Duration(a.DefaultSessionTTL) != 10*time.Minute {
		t.Fatalf("parsed %+v", &a)
	}
}

func TestIdentityCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`agent_vault {
		local_agent local
		session_lease_timeout 10s
		operator_login_ttl 1h
		audit_retention 30d
		activity_retention 2d
		activity_max_rows 5000
	}`)
	var a App
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if a.LocalAgent != "local" || time.Duration(a.SessionLeaseTimeout) != 10*time.Second ||
		time.Duration(a.OperatorLoginTTL) != time.Hour || time.Duration(a.AuditRetention) != 30*24*time.Hour ||
		time.Duration(a.ActivityRetention) != 48*time.Hour || a.ActivityMaxRows != 5000 {
		t.Fatalf("parsed %+v", &a)
	}
	// Given without a value (an unset {$ENV}): the defaults.
	var empty App
	if err := empty.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault {\n local_agent\n session_lease_timeout\n audit_retention\n activity_retention\n activity_max_rows\n }")); err != nil {
		t.Fatal(err)
	}
	if empty.LocalAgent != "" || empty.SessionLeaseTimeout != 0 || empty.AuditRetention != 0 {
		t.Fatalf("empty options parsed %+v", &empty)
	}
	if err := empty.checkIdentityConfig(); err != nil {
		t.Fatal(err)
	}
	if time.Duration(empty.SessionLeaseTimeout) != 30*time.Second || time.Duration(empty.OperatorLoginTTL) != 12*time.Hour ||
		time.Duration(empty.AuditRetention) != 2160*time.Hour || time.Duration(empty.ActivityRetention) != 168*time.Hour ||
		empty.ActivityMaxRows != 1000000 {
		t.Fatalf("defaults %v %v %v", time.Duration(empty.SessionLeaseTimeout), time.Duration(empty.OperatorLoginTTL), time.Duration(empty.AuditRetention))
	}
	for _, bad := range []App{
		{SessionLeaseTimeout: caddy.Duration(4 * time.Second)},
		{OperatorLoginTTL: caddy.Duration(time.Second)},
		{AuditRetention: caddy.Duration(time.Minute)},
		{ActivityRetention: caddy.Duration(59 * time.Minute)},
		{ActivityMaxRows: 999},
		{ActivityMaxRows: -1},
		{LocalAgent: "Not A Name"},
	} {
		if err := bad.checkIdentityConfig(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestStateCaddyfile(t *testing.T) {
	for in, want := range map[string]StateConfig{
		"agent_vault {\n state\n }":                                         {},
		"agent_vault {\n state sqlite\n }":                                  {Backend: "sqlite"},
		"agent_vault {\n state sqlite /x/state.db\n }":                      {Backend: "sqlite", Path: "/x/state.db"},
		"agent_vault {\n state postgres {env.AGENT_VAULT_DATABASE_URL}\n }": {Backend: "postgres", DSN: "{env.AGENT_VAULT_DATABASE_URL}"},
		"agent_vault {\n state postgres postgres://u@h/db {\n reload_interval 10s\n max_stale 2m\n }\n admin_token {env.T}\n }": {
			Backend: "postgres", DSN: "postgres://u@h/db", ReloadInterval: caddy.Duration(10 * time.Second), MaxStale: caddy.Duration(2 * time.Minute),
		},
	} {
		var a App
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if a.State == nil || *a.State != want {
			t.Errorf("%q: parsed %+v, want %+v", in, a.State, want)
		}
	}
}

func TestAppCaddyfileErrors(t *testing.T) {
	for _, in := range []string{
		`agent_vault extra`,
		`agent_vault { bogus 1 }`,
		`agent_vault { data_dir a b }`,
		`agent_vault { leaf_lifetime forever }`,
		`agent_vault { leaf_lifetime 30s }`,
		`agent_vault { default_session_ttl -1h }`,
		`agent_vault { session_lease_timeout soon }`,
		`agent_vault { audit_retention -1h }`,
		`agent_vault { activity_retention -1h }`,
		`agent_vault { activity_max_rows many }`,
		`agent_vault { activity_max_rows -5 }`,
		`agent_vault { activity_max_rows 1 2 }`,
		`agent_vault { local_agent a b }`,
		`agent_vault { store }`,
		`agent_vault { store nosuchbackend }`,
		"agent_vault {\n state mysql dsn\n }",
		"agent_vault {\n state sqlite a b\n }",
		"agent_vault {\n state sqlite {\n max_stale soon\n }\n }",
		"agent_vault {\n state sqlite {\n bogus 1s\n }\n }",
	} {
		var a App
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

func TestProxyCaddyfile(t *testing.T) {
	var p Proxy
	d := caddyfile.NewTestDispenser(`agent_vault_proxy {
		unmatched tunnel
		dial_timeout 3s
		response_header_timeout 1m
		idle_timeout 30s
	}`)
	if err := p.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if p.Unmatched != "tunnel" || time.Duration(p.DialTimeout) != 3*time.Second || p.Validate() != nil {
		t.Fatalf("parsed %+v", &p)
	}
	b, _ := json.Marshal(&p)
	if !strings.Contains(string(b), `"unmatched":"tunnel"`) {
		t.Fatalf("json %s", b)
	}
	for _, in := range []string{`agent_vault_proxy x`, "agent_vault_proxy {\n unmatched\n}", `agent_vault_proxy { nope 1 }`, `agent_vault_proxy { dial_timeout soon }`,
		`agent_vault_proxy { unmatched allow }`, `agent_vault_proxy { idle_timeout -1s }`} {
		var p Proxy
		if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
	bad := Proxy{Unmatched: "allow"}
	if bad.Validate() == nil {
		t.Error("unmatched allow validated")
	}
	neg := Proxy{DialTimeout: caddy.Duration(-1)}
	if neg.Validate() == nil {
		t.Error("negative timeout validated")
	}
}

func TestAPICaddyfile(t *testing.T) {
	var a API
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`agent_vault_api`)); err != nil {
		t.Fatal(err)
	}
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`agent_vault_api { x }`)); err == nil {
		t.Fatal("unknown option accepted")
	}
	var e API
	if err := e.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault_api {\n allowed_hosts\n}")); err != nil || len(e.AllowedHosts) != 0 {
		t.Fatalf("allowed_hosts without a name (an unset env): %v %q", err, e.AllowedHosts)
	}
	if err := e.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault_api extra")); err == nil {
		t.Fatal("an argument accepted")
	}
	var b API
	if err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault_api {\n allowed_hosts broker.example.com vault.internal\n}")); err != nil {
		t.Fatal(err)
	}
	if want := []string{"broker.example.com", "vault.internal"}; !slices.Equal(b.AllowedHosts, want) {
		t.Fatalf("allowed_hosts %q, want %q", b.AllowedHosts, want)
	}
	if err := b.compileAllowedHosts(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"127.0.0.1", "host:80", "*.example.com", "bad host"} {
		c := API{AllowedHosts: []string{bad}}
		if c.compileAllowedHosts() == nil {
			t.Errorf("allowed_hosts %q validated", bad)
		}
		if err := (&API{AllowedHosts: []string{"ok.example.com", bad}}).Validate(); err == nil || !strings.Contains(err.Error(), "allowed_hosts") {
			t.Errorf("Validate allowed_hosts %q: %v", bad, err)
		}
	}
	if err := (&API{AllowedHosts: []string{"Broker.Example.com."}}).Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestHostCheck: the management listener answers to IP literals,
// localhost, *.localhost and allowed_hosts only (421 otherwise, before
// any authentication), so DNS rebinding cannot reach it.
func TestHostCheck(t *testing.T) {
	a := API{AllowedHosts: []string{"Broker.Example.com"}}
	if err := a.compileAllowedHosts(); err != nil {
		t.Fatal(err)
	}
	for host, ok := range map[string]bool{
		"127.0.0.1:14321": true, "127.0.0.1": true, "[::1]:14321": true, "localhost": true, "localhost:14321": true,
		"ui.localhost:1": true, "broker.example.com": true, "BROKER.example.com:443": true, "broker.example.com.": true,
		"evil.example": false, "evil.example:14321": false, "": false, "localhost.evil.example": false,
		"example.com": false, "broker.example.com.evil": false,
		// One parser (hostname.Normalize) for the Host header and the
		// allowed names: case, a trailing dot and brackets do not matter,
		// a malformed port is not ignored.
		"LOCALHOST.": true, "LOCALHOST.:14321": true, "[::1]": true, "[::FFFF:127.0.0.1]:1": true, "Broker.Example.COM.:8443": true,
		"localhost:abc": false, "localhost:0": false, "[::1]:": false, "::1": false, "localhost:14321:1": false,
	} {
		r := httptest.NewRequest("GET", "/api/v1/credentials", nil)
		r.Host = host
		err := a.checkHost(r)
		if (err == nil) != ok {
			t.Errorf("Host %q: err %v, want allowed %v", host, err, ok)
		}
		if err != nil {
			if st, _, _ := apiError(err); st != http.StatusMisdirectedRequest {
				t.Errorf("Host %q: status %d, want 421", host, st)
			}
		}
	}
}

func TestValidateProxyURL(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:14322", "http://[::1]:1/"} {
		if err := validateProxyURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"https://127.0.0.1:1", "http://127.0.0.1", "http://u:p@h:1", "127.0.0.1:1", "http://h:1/x"} {
		if validateProxyURL(bad) == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// A DSN where the backend or a sqlite path goes (arguments shifted by
// an unset variable) is refused without being repeated.
func TestStateErrorsNeverQuoteADSN(t *testing.T) {
	const dsn = "postgres://u:secretpw@db.internal:5432/av"
	var a App
	err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault {\n state " + dsn + " other\n }"))
	if err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Errorf("Caddyfile: %v", err)
	}
	for _, st := range []StateConfig{{Backend: dsn}, {Backend: StateSQLite, Path: dsn}} {
		a := App{DataDir: t.TempDir(), State: &st}
		err := a.checkState(caddy.NewReplacer())
		if err == nil || strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%+v: %v", st, err)
		}
	}
}

func TestMetricsTokenCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`agent_vault {
		metrics_token {env.AGENT_VAULT_METRICS_TOKEN}
	}`)
	var a App
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if a.MetricsToken != "{env.AGENT_VAULT_METRICS_TOKEN}" {
		t.Fatalf("metrics_token = %q", a.MetricsToken)
	}
	// Given without a value (an unset {$ENV}): no metrics token.
	var b App
	if err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault {\n metrics_token\n }")); err != nil || b.MetricsToken != "" {
		t.Fatalf("empty metrics_token: %v, %q", err, b.MetricsToken)
	}
}

func TestDisableActivityLogCaddyfile(t *testing.T) {
	var a App
	if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault {\n disable_activity_log\n }")); err != nil {
		t.Fatal(err)
	}
	if !a.DisableActivityLog {
		t.Fatal("disable_activity_log not set")
	}
	// Default: the activity log is on.
	var b App
	if err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault {\n activity_max_rows 5000\n }")); err != nil || b.DisableActivityLog {
		t.Fatalf("without the option: %v, disable_activity_log = %v", err, b.DisableActivityLog)
	}
	// It takes no arguments.
	var c App
	if err := c.UnmarshalCaddyfile(caddyfile.NewTestDispenser("agent_vault {\n disable_activity_log true\n }")); err == nil {
		t.Fatal("disable_activity_log true: accepted")
	}
}
