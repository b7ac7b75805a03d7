package builtin

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

func init() {
	caddy.RegisterModule(Module{})
}

// Module is the built-in encrypted credential store: values are kept
// AES-256-GCM encrypted in <dir>/credentials.json under a key derived
// with argon2id from the master password. It is the default store and
// the one the management API writes to.
type Module struct {
	// The master password. Placeholders are expanded, so
	// {env.AGENT_VAULT_MASTER_PASSWORD} keeps it out of the JSON config.
	// Either this or master_password_file is required.
	MasterPassword string `json:"master_password,omitempty"`

	// A file holding the master password (trailing newlines are
	// ignored). Placeholders are expanded. Takes precedence over
	// master_password.
	MasterPasswordFile string `json:"master_password_file,omitempty"`

	// Directory of the encrypted file. Default: the app's data_dir.
	Dir string `json:"dir,omitempty"`

	password []byte
	*Store
}

// CaddyModule returns the Caddy module information.
func (Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "agent_vault.stores.builtin",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision resolves the master password; it fails when there is none.
func (m *Module) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	file, err := repl.ReplaceOrErr(m.MasterPasswordFile, false, true)
	if err != nil {
		return fmt.Errorf("master_password_file: %v", err)
	}
	dir, err := repl.ReplaceOrErr(m.Dir, false, true)
	if err != nil {
		return fmt.Errorf("dir: %v", err)
	}
	m.Dir = dir
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("reading master_password_file: %v", err)
		}
		m.password = []byte(strings.TrimRight(string(data), "\r\n"))
	} else {
		pw, err := repl.ReplaceOrErr(m.MasterPassword, false, true)
		if err != nil {
			return fmt.Errorf("master_password: %v", err)
		}
		m.password = []byte(pw)
	}
	if len(m.password) == 0 {
		return errors.New("the built-in store needs a master password: set AGENT_VAULT_MASTER_PASSWORD or AGENT_VAULT_MASTER_PASSWORD_FILE")
	}
	return nil
}

// Open decrypts the store, in dataDir unless Dir is set.
func (m *Module) Open(dataDir string) error {
	dir := m.Dir
	if dir == "" {
		dir = dataDir
	}
	st, err := Open(dir, m.password, Options{StoreName: "builtin"})
	clear(m.password) // the derived key lives on inside the store; the password need not
	if err != nil {
		return err
	}
	m.Store = st
	return nil
}

// UnmarshalCaddyfile reads the store's block:
//
//	store builtin {
//		master_password      <password>
//		master_password_file <path>
//		dir                  <path>
//	}
//
// An option given with no value (as an unset {$ENV} leaves it) is
// ignored.
func (m *Module) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // backend name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) > 1 {
			return d.ArgErr()
		}
		val := ""
		if len(args) == 1 {
			val = args[0]
		}
		switch opt {
		case "master_password":
			m.MasterPassword = val
		case "master_password_file":
			m.MasterPasswordFile = val
		case "dir":
			m.Dir = val
		default:
			return d.Errf("unrecognized builtin store option %q", opt)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner      = (*Module)(nil)
	_ caddyfile.Unmarshaler  = (*Module)(nil)
	_ storebackends.Writable = (*Module)(nil)
	_ storebackends.Opener   = (*Module)(nil)
)
