// Package credentials merges the configured credential stores into the
// one view the proxy and the management API use.
//
// The rules, in one place:
//   - Stores are in priority order: when two hold the same name, the
//     earlier one wins.
//   - A name a synced store (Vault, Infisical) has ever listed is claimed
//     by the highest-priority such store and never served from another
//     one, so a secret deleted or broken upstream does not silently fall
//     back to an older copy elsewhere; a write of a claimed name to
//     another store is refused with ErrShadowed.
//   - The first writable store receives API writes.
//   - Every read on a request's path goes through Snapshot.Lookup, which
//     applies the owning store's freshness: a value from a store past its
//     staleness bound is refused, never served.
//
// The proxy reads an immutable Snapshot swapped atomically after every
// change, so a request sees one consistent set of values.
package credentials

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Store is one configured store and the name the operator gave it.
type Store struct {
	Name  string
	Store storebackends.Store
}

// Set is the merged view of the configured stores. It is safe for
// concurrent use.
type Set struct {
	stores []entry

	writeMu sync.Mutex // serialises API writes (held across store I/O)
	mu      sync.Mutex // guards claims and snapshot rebuilds (never held across a write)
	// claims maps a credential name to the index of the synced store
	// that owns it (see the package doc). Claims are never dropped.
	claims map[string]int
	// sources are the credentials that mint tokens, by name (guarded
	// by mu). A name is a source or a stored value, never both.
	sources map[string]*tokensource.Source
	snap    atomic.Pointer[Snapshot]
}

type entry struct {
	name   string
	store  storebackends.Store
	synced storebackends.Synced // nil for stores without a sync engine
}

// New builds a Set over stores, in priority order, and takes the first
// snapshot. Stores that implement storebackends.Notifier (synced stores,
// the built-in store) report their changes to it; synced stores are not
// started (see Start).
func New(stores []Store) (*Set, error) {
	if err := CheckNames(stores); err != nil {
		return nil, err
	}
	s := &Set{claims: map[string]int{}, sources: map[string]*tokensource.Source{}}
	for _, st := range stores {
		e := entry{name: st.Name, store: st.Store}
		if sy, ok := st.Store.(storebackends.Synced); ok {
			e.synced = sy
		}
		s.stores = append(s.stores, e)
	}
	// Every store that can change by itself (a synced store, or the
	// built-in store reloading what another broker wrote) tells the Set.
	for _, e := range s.stores {
		if n, ok := e.store.(storebackends.Notifier); ok {
			n.SetOnChange(s.Rebuild)
		}
	}
	s.Rebuild()
	return s, nil
}

// CheckNames checks that every store has a name and an implementation
// and that no name is used twice. The app calls it before opening any
// store; New calls it too.
func CheckNames(stores []Store) error {
	seen := map[string]bool{}
	for _, st := range stores {
		if st.Name == "" || st.Store == nil {
			return errors.New("credentials: every store needs a name and an implementation")
		}
		if seen[st.Name] {
			return fmt.Errorf("store %q configured twice: give each store its own name", st.Name)
		}
		seen[st.Name] = true
	}
	return nil
}

// Start starts the synced stores' sync loops.
func (s *Set) Start() {
	for _, e := range s.stores {
		if e.synced != nil {
			e.synced.Start()
		}
	}
}

// Stop stops the synced stores' sync loops.
func (s *Set) Stop() {
	for _, e := range s.stores {
		if e.synced != nil {
			e.synced.Stop()
		}
	}
}

// Len is the number of configured stores.
func (s *Set) Len() int { return len(s.stores) }

// Snapshot returns the current immutable view.
func (s *Set) Snapshot() *Snapshot { return s.snap.Load() }

// Rebuild refreshes the snapshot from the stores. Synced stores call it
// after each change; writes call it themselves.
func (s *Set) Rebuild() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rebuildLocked()
}

func (s *Set) rebuildLocked() {
	lists := make([][]storebackends.Meta, len(s.stores))
	for i, e := range s.stores {
		lists[i] = e.store.List()
		if e.synced == nil {
			continue
		}
		for _, m := range lists[i] {
			if owner, ok := s.claims[m.Name]; !ok || i < owner {
				s.claims[m.Name] = i
			}
		}
	}
	snap := &Snapshot{values: map[string]value{}, sources: s.sources}
	for i, e := range s.stores {
		vals := e.store.Values()
		for _, m := range lists[i] {
			if _, dup := snap.values[m.Name]; dup {
				continue // an earlier store wins
			}
			if owner, claimed := s.claims[m.Name]; claimed && owner != i {
				continue // owned by a synced store, even while it lacks a value
			}
			v, ok := vals[m.Name]
			if !ok {
				continue
			}
			snap.values[m.Name] = value{v: v, store: i, synced: e.synced}
			snap.meta = append(snap.meta, m)
		}
	}
	for name := range s.sources {
		delete(snap.values, name) // a source shadows any stored value (Put refuses one)
	}
	snap.meta = slices.DeleteFunc(snap.meta, func(m storebackends.Meta) bool { return s.sources[m.Name] != nil })
	sort.Slice(snap.meta, func(i, j int) bool { return snap.meta[i].Name < snap.meta[j].Name })
	s.snap.Store(snap)
}

// invalidInput is a caller's mistake: its text is the reason alone, and
// it matches storebackends.ErrInvalidInput (the API answers 400).
type invalidInput struct{ error }

func (e invalidInput) Unwrap() []error { return []error{e.error, storebackends.ErrInvalidInput} }

// Errors of the write path.
var (
	// ErrShadowed is a write the proxy would never use: the name
	// belongs to a synced store other than the writable one.
	ErrShadowed = errors.New("credential name belongs to another store")
	// ErrIsTokenSource is a value written to, or a token source
	// defined on, a name that is already the other thing (409).
	ErrIsTokenSource = errors.New("credential name is taken")
	// ErrNoWritableStore means no configured store accepts writes.
	ErrNoWritableStore = errors.New("no writable credential store is configured")
)

// writable returns the index and store that receive API writes.
func (s *Set) writable() (int, storebackends.Writable, error) {
	for i, e := range s.stores {
		if w, ok := e.store.(storebackends.Writable); ok {
			return i, w, nil
		}
	}
	return 0, nil, ErrNoWritableStore
}

// Put stores a credential in the writable store. created reports
// whether the name was not served before.
func (s *Set) Put(name, value string) (m storebackends.Meta, created bool, err error) {
	if err := storebackends.ValidateName(name); err != nil {
		return storebackends.Meta{}, false, invalidInput{err}
	}
	i, w, err := s.writable()
	if err != nil {
		return storebackends.Meta{}, false, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	owner, claimed := s.claims[name]
	_, isSource := s.sources[name]
	s.mu.Unlock()
	if isSource {
		return storebackends.Meta{}, false, fmt.Errorf("%w: %s mints its own tokens; delete it first to store a value under that name", ErrIsTokenSource, name)
	}
	if claimed && owner != i {
		return storebackends.Meta{}, false, fmt.Errorf("%w: %s comes from store %q, so a value written to %q would never be used",
			ErrShadowed, name, s.stores[owner].name, s.stores[i].name)
	}
	existed := s.snap.Load().Has(name)
	m, err = w.Put(name, value)
	// Rebuild even on error: a store may have changed (a write that
	// reached the disk but not its fsync) and the proxy must agree.
	s.Rebuild()
	return m, !existed, err
}

// Delete removes a credential from the writable store; it returns
// storebackends.ErrNotFound when the store does not hold it.
func (s *Set) Delete(name string) error {
	if err := storebackends.ValidateName(name); err != nil {
		return invalidInput{err}
	}
	_, w, err := s.writable()
	if err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	err = w.Delete(name)
	s.Rebuild()
	return err
}

// List returns the metadata of every served credential, sorted by name,
// with the last sync time of those that come from synced stores, and
// the kind, expiry, last refresh and last error of token sources.
func (s *Set) List() []storebackends.Meta {
	snap := s.snap.Load()
	out := make([]storebackends.Meta, len(snap.meta), len(snap.meta)+len(snap.sources))
	copy(out, snap.meta)
	for i := range out {
		if st := snap.values[out[i].Name].synced; st != nil {
			if t := st.LastSync(); !t.IsZero() {
				out[i].SyncedAt = &t
			}
		}
	}
	for name, src := range snap.sources {
		out = append(out, sourceMeta(name, src))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// TokenSourceStore is the Store of a token source in listings.
const TokenSourceStore = "token_source"

func sourceMeta(name string, src *tokensource.Source) storebackends.Meta {
	st := src.Status()
	m := storebackends.Meta{Name: name, Store: TokenSourceStore, Version: "0", UpdatedAt: src.Defined(), Kind: st.Kind, LastError: st.LastError}
	if !st.ExpiresAt.IsZero() {
		m.ExpiresAt = &st.ExpiresAt
	}
	if !st.LastRefresh.IsZero() {
		m.LastRefresh = &st.LastRefresh
	}
	return m
}

// PutSource makes name a token source (replacing the one it was). A
// name a store serves is refused with ErrIsTokenSource.
func (s *Set) PutSource(src *tokensource.Source) (created bool, err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	name := src.Name()
	_, had := s.sources[name]
	if !had && s.snap.Load().Has(name) {
		return false, fmt.Errorf("%w: a store holds a value named %s; delete it first, or pick another name", ErrIsTokenSource, name)
	}
	next := maps.Clone(s.sources)
	next[name] = src
	s.sources = next // the snapshot keeps the map it was built with
	s.rebuildLocked()
	return !had, nil
}

// DeleteSource removes a token source; it reports whether there was one.
func (s *Set) DeleteSource(name string) bool {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sources[name]; !ok {
		return false
	}
	next := maps.Clone(s.sources)
	delete(next, name)
	s.sources = next
	s.rebuildLocked()
	return true
}

// IsSource reports whether name is a token source.
func (s *Set) IsSource(name string) bool {
	_, ok := s.snap.Load().sources[name]
	return ok
}

// WritableServes reports whether the store that takes API writes is
// the one serving name (a rotated refresh token is then written back
// there).
func (s *Set) WritableServes(name string) bool {
	i, _, err := s.writable()
	if err != nil {
		return false
	}
	v, ok := s.snap.Load().values[name]
	return ok && v.store == i
}

// Missing returns the names in names that no store serves now, for
// warnings when a service refers to them.
func (s *Set) Missing(names []string) []string {
	snap := s.snap.Load()
	var out []string
	for _, n := range names {
		if !snap.Has(n) {
			out = append(out, n)
		}
	}
	return out
}

// Status describes every store, in priority order, and reports whether
// any of them is past its staleness bound (requests needing its
// credentials are refused).
func (s *Set) Status(now time.Time) (list []storebackends.StoreStatus, stale bool) {
	snap := s.snap.Load()
	for i, e := range s.stores {
		if e.synced != nil {
			if e.synced.Fresh(now) != nil {
				stale = true
			}
			list = append(list, e.synced.Health(now))
			continue
		}
		n := 0
		for _, v := range snap.values {
			if v.store == i {
				n++
			}
		}
		_, writable := e.store.(storebackends.Writable)
		list = append(list, storebackends.StoreStatus{Store: e.name, Status: storebackends.StatusOK, Credentials: n, Writable: &writable})
	}
	return list, stale
}
