package syncengine

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Health statuses, as storebackends defines them.
const (
	StatusOK          = storebackends.StatusOK
	StatusDegraded    = storebackends.StatusDegraded
	StatusStale       = storebackends.StatusStale
	StatusNeverSynced = storebackends.StatusNeverSynced
)

// Health reports the sync state as of now, for the management API. It
// never carries a credential value.
func (e *Engine) Health(now time.Time) storebackends.StoreStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := &e.state
	h := storebackends.StoreStatus{
		Store:       e.name,
		Credentials: len(e.snap.Load().entries),
		SyncStatus: &storebackends.SyncStatus{
			LastSuccess:  st.lastSuccess,
			LastAttempt:  st.lastAttempt,
			LastError:    st.lastError,
			MaxStaleness: e.maxStaleness.String(),
			Problems:     slices.Clone(st.problems),
			Syncs:        st.syncs,
			Changes:      st.changes,
		},
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
