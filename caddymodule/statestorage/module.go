package statestorage

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/masterpassword"
)

func init() {
	caddy.RegisterModule(Module{})
}

// Module is Caddy's storage (caddy.storage.agent_vault_state) in the
// state database on PostgreSQL. Configured as the global storage of
// every broker of a cluster, it gives them one PKI app CA — root and
// intermediate, certificates and private keys — and one set of any
// other TLS assets, with Caddy's locks working across the cluster.
// Values are sealed with a key derived from the master password; the
// brokers need the same master password and nothing else in common.
type Module struct {
	// The PostgreSQL DSN or URL of the state database. Placeholders
	// are expanded, so {env.AGENT_VAULT_DATABASE_URL} keeps the
	// database password out of the JSON config. Required; no default.
	DSN string `json:"dsn,omitempty"`

	// The master password the sealing key is derived from. Placeholders
	// are expanded, so {env.AGENT_VAULT_MASTER_PASSWORD} keeps it out of
	// the JSON config. Either this or master_password_file is required;
	// no default.
	MasterPassword string `json:"master_password,omitempty"`

	// A file holding the master password (trailing newlines are
	// ignored). Placeholders are expanded. Takes precedence over
	// master_password. Default: none.
	MasterPasswordFile string `json:"master_password_file,omitempty"`

	ctx      caddy.Context
	logger   *zap.Logger
	dsn      string // expanded
	password []byte // cleared once the key is derived
	pooled   bool   // this config holds a reference in openDatabases
}

// CaddyModule returns the Caddy module information.
func (Module) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.agent_vault_state",
		New: func() caddy.Module { return new(Module) },
	}
}

// Provision expands the placeholders and reads the master password;
// it fails when the DSN or the password is missing. It does no I/O
// with the database: CertMagicStorage does.
func (m *Module) Provision(ctx caddy.Context) error {
	m.ctx, m.logger = ctx, ctx.Logger()
	repl := caddy.NewReplacer()
	dsn, err := repl.ReplaceOrErr(m.DSN, false, true)
	if err != nil {
		return fmt.Errorf(errPrefix+"dsn: %v", err)
	}
	if strings.TrimSpace(dsn) == "" {
		return errors.New(errPrefix + "dsn is required: the PostgreSQL DSN or URL of the state database, e.g. {env.AGENT_VAULT_DATABASE_URL}")
	}
	m.dsn = dsn
	if m.password, err = masterpassword.Resolve(repl, m.MasterPassword, m.MasterPasswordFile); errors.Is(err, masterpassword.ErrMissing) {
		return errors.New(errPrefix + "needs the master password: set AGENT_VAULT_MASTER_PASSWORD or AGENT_VAULT_MASTER_PASSWORD_FILE (read by Caddyfile.example), or give master_password / master_password_file in the storage's config")
	} else if err != nil {
		return errors.New(errPrefix + err.Error())
	}
	return nil
}

// startTimeout bounds opening the database and setting up the key at
// start-up, so an unreachable database fails the start instead of
// hanging it.
const startTimeout = time.Minute

// CertMagicStorage opens the state database (or shares the one already
// open for this DSN: a config reload does not reconnect) and returns
// the storage over it, sealing with the key derived from the master
// password. A wrong master password, an unreachable database or a
// newer schema stop start-up here.
func (m *Module) CertMagicStorage() (certmagic.Storage, error) {
	ctx, cancel := context.WithTimeout(m.ctx, startTimeout)
	defer cancel()
	val, _, err := openDatabases.LoadOrNew(m.dsn, func() (caddy.Destructor, error) {
		db, err := state.Open(ctx, state.Config{Backend: "postgres", DSN: m.dsn, Logger: m.logger})
		if err != nil {
			return nil, err
		}
		return &pooledDB{db: db}, nil
	})
	if err != nil {
		return nil, fmt.Errorf(errPrefix+"%v", err)
	}
	m.pooled = true
	st, err := val.(*pooledDB).storage(ctx, m.password, m.logger)
	clear(m.password) // the derived key lives on in the sealer; the password need not
	if err != nil {
		return nil, err
	}
	return st, nil
}

// Cleanup releases this config's hold on the shared database; the last
// config to let go closes it. Caddy calls it for storage modules as for
// any module loaded into a config's context.
func (m *Module) Cleanup() error {
	if !m.pooled {
		return nil
	}
	m.pooled = false
	_, err := openDatabases.Delete(m.dsn)
	return err
}

// openDatabases shares open state databases across config reloads, by
// expanded DSN.
var openDatabases = caddy.NewUsagePool()

// pooledDB is a shared database and the storage over it, kept for as
// long as the master password stays the same across reloads.
type pooledDB struct {
	db *state.DB

	mu    sync.Mutex
	check [32]byte   // passwordCheck of the password st was made with
	st    *Storage   // the current storage
	all   []*Storage // every storage made over db, st included: an older config may still use one
}

// Destruct closes the database when the last config lets go of it,
// after stopping every storage's lock keep-alives and pair timers, so
// that no goroutine or timer outlives it.
func (p *pooledDB) Destruct() error {
	p.mu.Lock()
	all := p.all
	p.all, p.st = nil, nil
	p.mu.Unlock()
	var errs []error
	for _, st := range all {
		errs = append(errs, st.Close())
	}
	return errors.Join(append(errs, p.db.Close())...)
}

// storage returns the Storage for password: the one already made, when
// a reload brings the same password, else a new one (whose password
// is checked against the database's record).
func (p *pooledDB) storage(ctx context.Context, password []byte, logger *zap.Logger) (*Storage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sum := passwordCheck(password)
	if p.st != nil && hmac.Equal(sum[:], p.check[:]) {
		return p.st, nil
	}
	locker := New(p.db, nil, Options{Logger: logger}) // only for its lock
	sealer, err := openSealer(ctx, p.db, locker, password)
	_ = locker.Close() // it holds nothing once openSealer returns
	if err != nil {
		return nil, err
	}
	p.st, p.check = New(p.db, sealer, Options{Logger: logger}), sum
	p.all = append(p.all, p.st)
	return p.st, nil
}

// checkKey makes passwordCheck a keyed hash that means nothing outside
// this process.
var checkKey = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return b
}()

// passwordCheck lets a reload recognise the password the shared storage
// was made with, without keeping the password.
func passwordCheck(pw []byte) (sum [32]byte) {
	h := hmac.New(sha256.New, checkKey)
	h.Write(pw)
	copy(sum[:], h.Sum(nil))
	return sum
}

// Interface guards
var (
	_ caddy.Provisioner      = (*Module)(nil)
	_ caddy.CleanerUpper     = (*Module)(nil)
	_ caddy.StorageConverter = (*Module)(nil)
	_ Backend                = (*state.DB)(nil)
	_ MetaStore              = (*state.DB)(nil)
)
