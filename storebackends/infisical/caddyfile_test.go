package infisical

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`infisical {
		name prod
		site_url https://eu.infisical.com
		auth universal {
			client_id {env.INF_ID}
			client_secret_file /run/client-secret
		}
		project_id 6f1c-project
		environment prod
		secret_path /agents
		recursive
		name_prefix INF_
		poll_interval 10s
		max_staleness 2m
		timeout 3s
		allow_empty
		ca_cert /etc/infisical-ca.pem
		tls_server_name infisical.internal
		secret_path
	}`)
	var m Module
	if err := m.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Auth{Method: "universal", ClientID: "{env.INF_ID}", ClientSecretFile: "/run/client-secret"}
	if m.Name != "prod" || m.SiteURL != "https://eu.infisical.com" || m.Auth != want ||
		m.ProjectID != "6f1c-project" || m.Environment != "prod" || m.SecretPath != "/agents" || !m.Recursive || m.NamePrefix != "INF_" ||
		time.Duration(m.PollInterval) != 10*time.Second || time.Duration(m.MaxStaleness) != 2*time.Minute || time.Duration(m.Timeout) != 3*time.Second ||
		!m.AllowEmpty || m.CACert != "/etc/infisical-ca.pem" || m.TLSServerName != "infisical.internal" {
		t.Fatalf("parsed %+v", &m)
	}
}

func TestUnmarshalCaddyfileToken(t *testing.T) {
	d := caddyfile.NewTestDispenser("infisical {\n auth token {\n token {env.INFISICAL_TOKEN}\n token_file /run/tok\n }\n project_id p\n environment dev\n}")
	var m Module
	if err := m.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if m.Auth != (Auth{Method: "token", Token: "{env.INFISICAL_TOKEN}", TokenFile: "/run/tok"}) || m.Recursive || m.Name != "" {
		t.Fatalf("parsed %+v", &m)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, in := range []string{
		"infisical extra",
		"infisical {\n bogus 1\n}",
		"infisical {\n recursive yes\n}",
		"infisical {\n poll_interval often\n}",
		"infisical {\n auth\n}",
		"infisical {\n auth oidc\n}",
		"infisical {\n auth universal extra\n}",
		"infisical {\n auth token {\n client_id x\n }\n}",
		"infisical {\n auth universal {\n token x\n }\n}",
		"infisical {\n auth universal {\n client_id a b\n }\n}",
		"infisical {\n allow_empty yes\n}",
		"infisical {\n site_url a b\n}",
	} {
		var m Module
		if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
