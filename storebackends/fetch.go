package storebackends

import (
	"context"
	"time"
)

// Item is one credential as an external store returned it.
type Item struct {
	Name  string
	Value string
	// Version is the backend's own version (a KV v2 metadata version);
	// empty when the backend has none, and the sync engine derives one
	// from the content.
	Version string
	// Source says where the value was read, e.g. "secret/agents/github#token".
	Source string
	// UpdatedAt is when the backend says the value last changed; zero
	// when it does not say.
	UpdatedAt time.Time
}

// Problem is a per-key issue that did not stop the fetch: an invalid
// name, a collision, a deleted secret. It never carries a value.
type Problem struct {
	Source string `json:"source"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
}

// Batch is the complete current content of an external store.
type Batch struct {
	Items    []Item
	Problems []Problem
}

// Fetcher reads every credential of an external store (HashiCorp Vault,
// Infisical, ...). It only authenticates and fetches: the sync engine
// owns scheduling, versions, staleness, health, snapshot swaps and
// back-off, so no store repeats them.
type Fetcher interface {
	// Fetch returns the store's complete current content. An error means
	// nothing usable was read (the engine keeps the last good snapshot);
	// per-key trouble goes into Batch.Problems instead.
	Fetch(ctx context.Context) (Batch, error)
}

// LoginChecker is implemented by fetchers that can validate their
// credentials cheaply; the engine calls it at start-up so that a bad
// token fails start-up with a clear message.
type LoginChecker interface {
	CheckLogin(ctx context.Context) error
}
