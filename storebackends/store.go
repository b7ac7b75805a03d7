// Package storebackends defines what the agent_vault app needs from a
// credential store. Each backend lives in its own sub-package.
package storebackends

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Meta describes one credential without its value. It is what the
// management API lists; it must never carry the value.
type Meta struct {
	Name      string    `json:"name"`
	Store     string    `json:"store"`
	Version   string    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	// Source says where an external store read the value from
	// (for example a Vault path); empty for the built-in store.
	Source string `json:"source,omitempty"`
	// SyncedAt is an external store's last successful sync.
	SyncedAt *time.Time `json:"synced_at,omitempty"`
	// Kind is a token source's kind (oauth2_refresh,
	// oauth2_client_credentials, github_app); empty for a stored value.
	Kind string `json:"kind,omitempty"`
	// ExpiresAt is when a token source's current access token expires;
	// absent before the first fetch.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// LastRefresh is a token source's last call of its token endpoint;
	// absent before the first.
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	// LastError is why a token source's last call failed; empty when
	// it worked. It never holds a secret.
	LastError string `json:"last_error,omitempty"`
}

// ErrNotFound is returned when a credential does not exist.
var ErrNotFound = errors.New("credential not found")

// ErrInvalidInput marks errors caused by a bad credential name or value
// (as opposed to a store failure); the management API answers 400.
var ErrInvalidInput = errors.New("invalid input")

// nameRE is the rule for credential names: they become environment
// variable names in the agent's process, so they must be valid ones.
var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// ValidateName reports whether name may be used as a credential name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid credential name %q: use letters, digits and '_', not starting with a digit, at most 128 characters", name)
	}
	return nil
}

// Store is a credential source as the agent_vault app sees it. The app
// copies Values into its in-memory snapshot after each change, so the
// proxy never decrypts or fetches on a request's path.
type Store interface {
	// List returns the metadata of every credential, sorted by name.
	List() []Meta
	// Values returns a fresh copy of every credential's value by name.
	Values() map[string]string
}

// Writable is a store the management API can write to.
type Writable interface {
	Store
	Put(name, value string) (Meta, error)
	Delete(name string) error
}

// Opener is implemented by store modules that keep state on disk. The
// app calls Open once, after provisioning the module, with the app's
// data directory; the store must fail here, at start-up, if it cannot
// be used.
type Opener interface {
	Open(dataDir string) error
}

// RecordsOpener is implemented by store modules that persist their
// records in the app's state database (the built-in store). The app
// calls OpenRecords once, after provisioning the module, with the
// records of this store and the app's data directory (where files of
// an older release may wait to be imported); the store must fail here,
// at start-up, if it cannot be used.
type RecordsOpener interface {
	OpenRecords(r Records, dataDir string) error
}

// Record is one credential as the built-in store persists it: the
// name, version and update time in clear (the API lists them), the
// value only sealed. The seal's additional data binds it to the name,
// version and update time, so a record cannot be moved or edited.
type Record struct {
	Name       string
	Version    uint64
	UpdatedAt  time.Time
	Nonce      []byte
	Ciphertext []byte
}

// ErrConflict is returned by Records.Put when the record changed since
// the caller read it (another broker wrote it first). The management
// API answers 409.
var ErrConflict = errors.New("the credential was changed concurrently")

// Records is where a built-in store keeps its header (key derivation
// parameters, salt and password check) and its sealed records. It is
// implemented over the state database by the app, and by fakes in
// tests; the store never sees SQL.
type Records interface {
	// Header returns the stored header document; ok is false when the
	// store has none yet (it is new).
	Header(ctx context.Context) (doc []byte, ok bool, err error)
	// CreateHeader stores doc unless a header exists, and returns the
	// header that is stored: the first writer wins, so two brokers
	// starting together on an empty database end up with one salt.
	CreateHeader(ctx context.Context, doc []byte) ([]byte, error)
	// List returns every record.
	List(ctx context.Context) ([]Record, error)
	// Put writes a record whose Version is one more than the stored
	// one's (or 1 for a new name); otherwise it fails with ErrConflict.
	Put(ctx context.Context, r Record) error
	// Delete removes a record; it reports whether there was one.
	Delete(ctx context.Context, name string) (bool, error)
}

// RecordsImporter is implemented by Records that can take a whole
// store at once, in one transaction and only while the store is empty:
// the import of an older release's credentials.json.
type RecordsImporter interface {
	Import(ctx context.Context, header []byte, records []Record) error
}

// Notifier is a store whose contents can change without a write
// through the Set (a sync engine, or another broker writing the shared
// state database): it calls the registered function after each such
// change, so the app rebuilds its merged view.
type Notifier interface {
	SetOnChange(func())
}

// Reloader is a store that re-reads its persisted records when the
// state database's change feed says they changed.
type Reloader interface {
	Reload(ctx context.Context) error
}

// Named is implemented by store modules that can be configured more
// than once (two Vault stores, say): StoreName is the configured name.
type Named interface {
	StoreName() string
}

// Synced is a store fed by the sync engine from an external source. The
// app starts and stops it, rebuilds its merged view when it changes, and
// refuses (503) requests that need a credential whose store is past its
// staleness bound.
type Synced interface {
	Store
	Start()
	Stop()
	// Notifier: SetOnChange registers the function called after each
	// change.
	Notifier
	// Fresh returns nil while the store may serve its last snapshot,
	// and an error saying why not otherwise.
	Fresh(now time.Time) error
	// Health describes the store for GET /api/v1/stores; SyncStatus
	// must be set.
	Health(now time.Time) StoreStatus
	// LastSync is the start of the last successful sync.
	LastSync() time.Time
}

// Sealer is a store that can seal secrets the broker keeps outside its
// records (a rotated refresh token of a read-only store, kept in the
// state database), with its own key; purpose binds each sealed value to
// its use, so one cannot be opened as another.
type Sealer interface {
	SealAux(purpose string, plaintext []byte) []byte
	OpenAux(purpose string, sealed []byte) ([]byte, error)
}
