package builtin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	dir      string
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
		return errors.New("the built-in store needs a master password: set AGENT_VAULT_MASTER_PASSWORD or AGENT_VAULT_MASTER_PASSWORD_FILE (read by Caddyfile.example), or give master_password / master_password_file in the store's config")
	}
	return nil
}

// Open decrypts the store, in dataDir unless Dir is set. A store that
// is already open (the config is being reloaded) is shared rather than
// opened twice, so two instances never write the same file.
func (m *Module) Open(dataDir string) error {
	dir := m.Dir
	if dir == "" {
		dir = dataDir
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	check := passwordCheck(m.password)
	val, _, err := openStores.LoadOrNew(dir, func() (caddy.Destructor, error) {
		st, err := Open(dir, m.password, Options{StoreName: "builtin"})
		if err != nil {
			return nil, err
		}
		return &pooledStore{Store: st, check: check}, nil
	})
	clear(m.password) // the derived key lives on inside the store; the password need not
	if err != nil {
		return err
	}
	ps := val.(*pooledStore)
	if !hmac.Equal(ps.check[:], check[:]) {
		openStores.Delete(dir)
		return fmt.Errorf("%w (the store is open with another password; restart to change it)", ErrWrongPassword)
	}
	m.Store, m.dir = ps.Store, dir
	return nil
}

// Cleanup releases this config's hold on the open store.
func (m *Module) Cleanup() error {
	if m.Store != nil {
		_, err := openStores.Delete(m.dir)
		return err
	}
	return nil
}

// openStores shares open stores across config reloads, by directory.
var openStores = caddy.NewUsagePool()

type pooledStore struct {
	*Store
	check [32]byte
}

func (*pooledStore) Destruct() error { return nil }

// checkKey makes passwordCheck a keyed hash that means nothing outside
// this process.
var checkKey = func() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}()

// passwordCheck lets a reload confirm it was given the password the
// shared store was opened with, without keeping the password.
func passwordCheck(pw []byte) (sum [32]byte) {
	h := hmac.New(sha256.New, checkKey)
	h.Write(pw)
	copy(sum[:], h.Sum(nil))
	return sum
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
