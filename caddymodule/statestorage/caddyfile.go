package statestorage

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/agentvault/caddy-agent-vault/internal/blockopts"
)

// UnmarshalCaddyfile reads the global storage option:
//
//	storage agent_vault_state {
//		dsn                  <postgresql dsn or url>
//		master_password      <password>
//		master_password_file <path>
//	}
//
// An option given with no value (as an unset {$ENV} leaves it) is
// ignored, as in the built-in store's block, so one Caddyfile can
// offer both password options and let the environment pick one.
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return blockopts.Parse(d, func(opt, val string) error {
		switch opt {
		case "dsn":
			m.DSN = val
		case "master_password":
			m.MasterPassword = val
		case "master_password_file":
			m.MasterPasswordFile = val
		default:
			return d.Errf("unrecognized agent_vault_state storage option %q", opt)
		}
		return nil
	})
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Module)(nil)
