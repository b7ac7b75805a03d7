package infisical

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile reads the store's block:
//
//	store infisical {
//		name            <store name>        # default infisical
//		site_url        <https://app.infisical.com>
//		auth universal {
//			client_id          <id>
//			client_id_file     <path>
//			client_secret      <secret>     # e.g. {env.INFISICAL_CLIENT_SECRET}
//			client_secret_file <path>
//		}
//		auth token {
//			token       <token>             # e.g. {env.INFISICAL_TOKEN}
//			token_file  <path>
//		}
//		project_id      <project id>
//		environment     <slug>
//		secret_path     <folder>            # default /
//		recursive
//		name_prefix     <prefix>
//		poll_interval   <duration>          # default 30s
//		max_staleness   <duration>          # default 5m
//		timeout         <duration>          # default 10s
//		allow_empty
//		ca_cert         <pem file>
//		tls_server_name <name>
//	}
//
// An option given with no value (as an unset {$ENV} leaves it) keeps
// its default.
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // backend name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "auth":
			if m.Auth.Method != "" {
				return d.Err("auth is given twice: keep one auth block")
			}
			if err := m.Auth.unmarshal(d); err != nil {
				return err
			}
			continue
		case "recursive":
			if d.NextArg() {
				return d.ArgErr()
			}
			m.Recursive = true
			continue
		}
		if shared, err := m.SyncConfig.UnmarshalOption(d); shared || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		args := d.RemainingArgs()
		if len(args) > 1 {
			return d.ArgErr()
		}
		field := map[string]*string{
			"site_url":        &m.SiteURL,
			"project_id":      &m.ProjectID,
			"environment":     &m.Environment,
			"secret_path":     &m.SecretPath,
			"name_prefix":     &m.NamePrefix,
			"ca_cert":         &m.CACert,
			"tls_server_name": &m.TLSServerName,
		}[opt]
		if field == nil {
			return d.Errf("unrecognized infisical store option %q", opt)
		}
		if len(args) == 1 {
			*field = args[0]
		}
	}
	return nil
}

func (a *Auth) unmarshal(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("auth: want `auth universal { ... }` or `auth token { ... }`")
	}
	a.Method = d.Val()
	var fields map[string]*string
	switch a.Method {
	case AuthUniversal:
		fields = map[string]*string{
			"client_id": &a.ClientID, "client_id_file": &a.ClientIDFile,
			"client_secret": &a.ClientSecret, "client_secret_file": &a.ClientSecretFile,
		}
	case AuthToken:
		fields = map[string]*string{"token": &a.Token, "token_file": &a.TokenFile}
	default:
		return d.Errf("auth: unknown method %q (want universal or token)", a.Method)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) > 1 {
			return d.ArgErr()
		}
		field := fields[opt]
		if field == nil {
			return d.Errf("unrecognized option %q for auth %s", opt, a.Method)
		}
		if len(args) == 1 {
			*field = args[0]
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Module)(nil)
