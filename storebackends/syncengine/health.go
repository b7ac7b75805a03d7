package syncengine

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Health statuses.
const (
	StatusOK          = "ok"           // the last attempt succeeded
	StatusDegraded    = "degraded"     // the last attempt failed, the snapshot is still within max_staleness
	StatusStale       = "stale"        // past max_staleness: requests needing the store fail
	StatusNeverSynced = "never_synced" // no sync has succeeded yet
)

// Health is a store's sync state, as the management API reports it. It
// never carries a credential value.
type Health struct {
	Store       string    `json:"store"`
	Status      string    `json:"status"`
	LastSuccess time.Time `json:"last_success"`
	LastAttempt time.Time `json:"last_attempt"`
	// LastError is why the last attempt failed; empty after a success.
	LastError string `json:"last_error,omitempty"`
	// Staleness is the age of the last successful sync as a Go
	// duration; empty if there was none.
	Staleness    string `json:"staleness"`
	MaxStaleness string `json:"max_staleness"`
	Credentials  int    `json:"credentials"`
	// Problems are those of the last batch read (kept through failed
	// fetches, which read none).
	Problems []storebackends.Problem `json:"problems,omitempty"`
	Syncs    uint64                  `json:"syncs"`   // successful syncs
	Changes  uint64                  `json:"changes"` // successful syncs that changed something
}

// Health reports the sync state as of now.
func (e *Engine) Health(now time.Time) Health {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := &e.state
	h := Health{
		Store:        e.name,
		LastSuccess:  st.lastSuccess,
		LastAttempt:  st.lastAttempt,
		LastError:    st.lastError,
		MaxStaleness: e.maxStaleness.String(),
		Credentials:  len(e.snap.Load().entries),
		Problems:     slices.Clone(st.problems),
		Syncs:        st.syncs,
		Changes:      st.changes,
	}
	switch {
	case st.lastSuccess.IsZero():
		h.Status = StatusNeverSynced
	case e.staleAt(now):
		h.Status = StatusStale
	case st.failures > 0:
		h.Status = StatusDegraded
	default:
		h.Status = StatusOK
	}
	if !st.lastSuccess.IsZero() {
		h.Staleness = now.Sub(st.lastSuccess).Round(time.Millisecond).String()
	}
	return h
}

// Fresh returns nil while the snapshot may be served at now, else a
// *StaleError. Whoever injects the store's credentials must refuse
// (503) when it fails, rather than use values that may be revoked.
func (e *Engine) Fresh(now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.staleAt(now) {
		return nil
	}
	return &StaleError{
		Store:        e.name,
		LastSuccess:  e.state.lastSuccess,
		MaxStaleness: e.maxStaleness,
		Age:          now.Sub(e.state.lastSuccess),
	}
}

// StaleError says a store's snapshot is too old to serve.
type StaleError struct {
	Store        string
	LastSuccess  time.Time // zero if the store never synced
	MaxStaleness time.Duration
	Age          time.Duration // time since LastSuccess when checked
}

func (e *StaleError) Error() string {
	if e.LastSuccess.IsZero() {
		return fmt.Sprintf("store %q has never synced", e.Store)
	}
	return fmt.Sprintf("store %q last synced %s ago, beyond its max_staleness of %s",
		e.Store, shortDuration(e.Age), shortDuration(e.MaxStaleness))
}

// shortDuration formats d for people: whole seconds from a second up,
// without zero trailing units ("7m", "1h30m", "45s", "1m5s").
func shortDuration(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
