package hashicorp

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`hashicorp {
		name prod
		address https://vault.example:8200
		namespace team-a
		auth approle {
			role_id {env.ROLE}
			secret_id_file /run/secret-id
			mount approle-agents
		}
		mount kv
		path agents
		kv_version 1
		name_prefix PROD_
		name_mapping path_key
		poll_interval 10s
		max_staleness 2m
		timeout 3s
		allow_empty
		ca_cert /etc/vault-ca.pem
		tls_server_name vault.internal
		namespace
	}`)
	var m Module
	if err := m.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if m.Name != "prod" || m.Address != "https://vault.example:8200" || m.Namespace != "team-a" ||
		m.Auth.Method != "approle" || m.Auth.RoleID != "{env.ROLE}" || m.Auth.SecretIDFile != "/run/secret-id" || m.Auth.Mount != "approle-agents" ||
		m.Mount != "kv" || m.Path != "agents" || m.KVVersion != 1 || m.NamePrefix != "PROD_" || m.NameMapping != "path_key" ||
		time.Duration(m.PollInterval) != 10*time.Second || time.Duration(m.MaxStaleness) != 2*time.Minute || time.Duration(m.Timeout) != 3*time.Second ||
		!m.AllowEmpty || m.CACert != "/etc/vault-ca.pem" || m.TLSServerName != "vault.internal" {
		t.Fatalf("parsed %+v", &m)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, in := range []string{
		"hashicorp extra",
		"hashicorp {\n bogus 1\n}",
		"hashicorp {\n kv_version 3\n}",
		"hashicorp {\n poll_interval often\n}",
		"hashicorp {\n auth ldap\n}",
		"hashicorp {\n auth token {\n role_id x\n }\n}",
		"hashicorp {\n allow_empty yes\n}",
		"hashicorp {\n address a b\n}",
	} {
		var m Module
		if err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestAuthGivenTwice(t *testing.T) {
	var m Module
	err := m.UnmarshalCaddyfile(caddyfile.NewTestDispenser("hashicorp {\n auth token {\n token a\n }\n auth approle {\n role_id r\n }\n}"))
	if err == nil {
		t.Fatal("two auth blocks accepted")
	}
}
