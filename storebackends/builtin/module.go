package builtin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/internal/blockopts"
	"github.com/agentvault/caddy-agent-vault/internal/masterpassword"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

func init() {
	caddy.RegisterModule(Module{})
}

// openTimeout bounds OpenRecords' database work (header, import, first
// read), so a hung database fails the start instead of hanging it.
const openTimeout = time.Minute

// Module is the built-in encrypted credential store: values are kept
// AES-256-GCM encrypted in the app's state database under a key derived
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

	// Directory where an older release kept credentials.json. On the
	// first start with a store that the state database does not hold
	// yet, that file is imported (it must open with the master
	// password) and renamed credentials.json.imported-<unix seconds>.
	// Placeholders are expanded. Default: the app's data_dir.
	Dir string `json:"dir,omitempty"`

	password []byte
	logger   *zap.Logger
	now      func() time.Time
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
func (m *Module) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	dir, err := repl.ReplaceOrErr(m.Dir, false, true)
	if err != nil {
		return fmt.Errorf("dir: %v", err)
	}
	m.Dir = dir
	if m.password, err = masterpassword.Resolve(repl, m.MasterPassword, m.MasterPasswordFile); errors.Is(err, masterpassword.ErrMissing) {
		return errors.New("the built-in store needs a master password: set AGENT_VAULT_MASTER_PASSWORD or AGENT_VAULT_MASTER_PASSWORD_FILE (read by Caddyfile.example), or give master_password / master_password_file in the store's config")
	} else if err != nil {
		return err
	}
	return nil
}

// OpenRecords opens the store kept in r. If r holds no store yet and
// the store directory (Dir, default dataDir) has an older release's
// credentials.json, that file is imported first and then renamed, so
// the credentials carry over and the file is not imported twice. Each
// config load opens its own Store over the shared records (a reload
// derives the key again); the records, not the Store, are shared.
func (m *Module) OpenRecords(r storebackends.Records, dataDir string) error {
	defer clear(m.password) // the derived key lives on inside the store; the password need not
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	dir := m.Dir
	if dir == "" {
		dir = dataDir
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := m.importFile(ctx, r, filepath.Join(dir, FileName)); err != nil {
		return err
	}
	st, err := Open(ctx, r, m.password, Options{StoreName: "builtin", Now: m.clock()})
	if err != nil {
		return err
	}
	m.Store = st
	return nil
}

// log returns the module's logger, or a no-op one when the module was
// not provisioned by Caddy (tests).
func (m *Module) log() *zap.Logger {
	if m.logger == nil {
		return zap.NewNop()
	}
	return m.logger
}

// clock returns the module's clock, time.Now unless a test set one.
func (m *Module) clock() func() time.Time {
	if m.now == nil {
		return time.Now
	}
	return m.now
}

// importFile imports path into r when r holds no store yet, then
// renames the file. A file that does not open with the password stops
// the start: silently starting empty would lose the credentials.
func (m *Module) importFile(ctx context.Context, r storebackends.Records, path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_, exists, err := r.Header(ctx)
	if err != nil {
		return fmt.Errorf("builtin store: reading the header: %w", err)
	}
	if exists {
		m.log().Warn("not importing an old credential file: the state database already holds the built-in store",
			zap.String("file", path))
		return nil
	}
	imp, ok := r.(storebackends.RecordsImporter)
	if !ok {
		return fmt.Errorf("builtin store: %s cannot be imported: the state backend does not support importing", path)
	}
	header, records, err := ReadFile(path, m.password)
	if err != nil {
		return fmt.Errorf("importing %s: %w", path, err)
	}
	if err := imp.Import(ctx, header, records); err != nil {
		// Another broker may have created the store meanwhile: then
		// its store is the one to open, and this file stays.
		if _, exists, herr := r.Header(ctx); herr == nil && exists {
			m.log().Warn("not importing an old credential file: another broker created the built-in store first",
				zap.String("file", path))
			return nil
		}
		return fmt.Errorf("importing %s: %w", path, err)
	}
	renamed := path + ".imported-" + strconv.FormatInt(m.clock()().Unix(), 10)
	if err := os.Rename(path, renamed); err != nil {
		return fmt.Errorf("imported %s, but renaming it failed (rename it yourself so it is not imported again): %w", path, err)
	}
	m.log().Info("imported the built-in store's old credential file into the state database",
		zap.String("file", path), zap.String("renamed_to", renamed), zap.Int("credentials", len(records)))
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
	return blockopts.Parse(d, func(opt, val string) error {
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
		return nil
	})
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Module)(nil)
	_ caddyfile.Unmarshaler       = (*Module)(nil)
	_ storebackends.Writable      = (*Module)(nil)
	_ storebackends.RecordsOpener = (*Module)(nil)
	_ storebackends.Notifier      = (*Module)(nil)
	_ storebackends.Reloader      = (*Module)(nil)
)
