package hashicorp

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile reads the store's block:
//
//	store hashicorp {
//		name            <store name>
//		address         <https://vault:8200>
//		namespace       <namespace>
//		auth token {
//			token       <token>          # e.g. {env.VAULT_TOKEN}
//			token_file  <path>
//		}
//		auth approle {
//			role_id         <id>
//			role_id_file    <path>
//			secret_id       <id>         # e.g. {env.VAULT_SECRET_ID}
//			secret_id_file  <path>
//			mount           <auth mount> # default approle
//		}
//		mount           <kv mount>       # default secret
//		path            <path>
//		kv_version      auto|1|2
//		name_prefix     <prefix>
//		name_mapping    key|path_key
//		poll_interval   <duration>       # default 30s
//		max_staleness   <duration>       # default 5m
//		timeout         <duration>       # default 10s
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
		if opt == "auth" {
			if m.Auth.Method != "" {
				return d.Err("auth is given twice: keep one auth block")
			}
			if err := m.Auth.unmarshal(d); err != nil {
				return err
			}
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
		if len(args) == 0 {
			continue
		}
		val := args[0]
		switch opt {
		case "address":
			m.Address = val
		case "namespace":
			m.Namespace = val
		case "mount":
			m.Mount = val
		case "path":
			m.Path = val
		case "kv_version":
			switch val {
			case "auto":
				m.KVVersion = 0
			case "1", "2":
				m.KVVersion, _ = strconv.Atoi(val)
			default:
				return d.Errf("kv_version: want auto, 1 or 2, got %q", val)
			}
		case "name_prefix":
			m.NamePrefix = val
		case "name_mapping":
			m.NameMapping = val
		case "ca_cert":
			m.CACert = val
		case "tls_server_name":
			m.TLSServerName = val
		default:
			return d.Errf("unrecognized hashicorp store option %q", opt)
		}
	}
	return nil
}

func (a *Auth) unmarshal(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("auth: want `auth token { ... }` or `auth approle { ... }`")
	}
	a.Method = d.Val()
	if a.Method != "token" && a.Method != "approle" {
		return d.Errf("auth: unknown method %q (want token or approle)", a.Method)
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
		val := ""
		if len(args) == 1 {
			val = args[0]
		}
		switch {
		case a.Method == "token" && opt == "token":
			a.Token = val
		case a.Method == "token" && opt == "token_file":
			a.TokenFile = val
		case a.Method == "approle" && opt == "role_id":
			a.RoleID = val
		case a.Method == "approle" && opt == "role_id_file":
			a.RoleIDFile = val
		case a.Method == "approle" && opt == "secret_id":
			a.SecretID = val
		case a.Method == "approle" && opt == "secret_id_file":
			a.SecretIDFile = val
		case a.Method == "approle" && opt == "mount":
			a.Mount = val
		default:
			return d.Errf("unrecognized option %q for auth %s", opt, a.Method)
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Module)(nil)
