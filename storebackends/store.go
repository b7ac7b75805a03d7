// Package storebackends defines what the agent_vault app needs from a
// credential store. Each backend lives in its own sub-package.
package storebackends

import (
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
	// SetOnChange registers the function called after each change.
	SetOnChange(func())
	// Fresh returns nil while the store may serve its last snapshot,
	// and an error saying why not otherwise.
	Fresh(now time.Time) error
	// Health describes the store for GET /api/v1/stores; SyncStatus
	// must be set.
	Health(now time.Time) StoreStatus
	// LastSync is the start of the last successful sync.
	LastSync() time.Time
}
