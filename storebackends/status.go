package storebackends

import "time"

// Store statuses, as GET /api/v1/stores reports them.
const (
	// StatusOK: the store is usable; for a synced store, its last sync
	// attempt succeeded.
	StatusOK = "ok"
	// StatusDegraded: the last sync attempt failed, but the snapshot is
	// still within max_staleness and is served.
	StatusDegraded = "degraded"
	// StatusStale: past max_staleness; requests that need the store's
	// credentials are refused (503).
	StatusStale = "stale"
	// StatusNeverSynced: no sync has succeeded yet; requests that need
	// the store's credentials are refused (503).
	StatusNeverSynced = "never_synced"
)

// StoreStatus is one entry of GET /api/v1/stores. It lives here rather
// than in the API package so that synced stores can return it without
// importing the Caddy module. It never carries a credential value.
//
// A store that is not synced (the built-in one) sets Writable and leaves
// SyncStatus nil; a synced store sets SyncStatus and leaves Writable nil,
// so each kind shows only the fields that mean something for it.
type StoreStatus struct {
	// Store is the store's configured name.
	Store string `json:"store"`
	// Status is one of "ok", "degraded", "stale" or "never_synced"; a
	// store that is not synced is always "ok".
	Status string `json:"status"`
	// Credentials is how many credentials the store holds now.
	Credentials int `json:"credentials"`
	// Writable says whether the management API writes credentials to
	// this store. Absent for synced stores, which are read-only.
	Writable *bool `json:"writable,omitempty"`
	// SyncStatus holds the sync state of a store fed from an external
	// source; its fields appear inline in the JSON. Nil otherwise.
	*SyncStatus
}

// SyncStatus is the sync state of a store fed from an external source
// (HashiCorp Vault, Infisical, ...).
type SyncStatus struct {
	// LastSuccess is the start of the last successful sync; the zero
	// time if there was none.
	LastSuccess time.Time `json:"last_success"`
	// LastAttempt is the start of the last sync attempt; the zero time
	// if there was none.
	LastAttempt time.Time `json:"last_attempt"`
	// LastError is why the last attempt failed; absent after a success.
	LastError string `json:"last_error,omitempty"`
	// Staleness is the age of the last successful sync as a Go duration
	// ("1m30.5s"); empty if there was none.
	Staleness string `json:"staleness"`
	// MaxStaleness is how old the snapshot may get before requests that
	// need it are refused, as a Go duration.
	MaxStaleness string `json:"max_staleness"`
	// Problems are the per-key issues of the last batch read (kept
	// through failed fetches, which read none); absent if none.
	Problems []Problem `json:"problems,omitempty"`
	// Syncs counts successful syncs.
	Syncs uint64 `json:"syncs"`
	// Changes counts successful syncs that changed something.
	Changes uint64 `json:"changes"`
}
