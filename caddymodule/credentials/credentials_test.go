package credentials

import (
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// memStore is a writable in-memory store.
type memStore struct {
	mu   sync.Mutex
	name string
	vals map[string]string
}

func newMem(name string, kv ...string) *memStore {
	m := &memStore{name: name, vals: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		m.vals[kv[i]] = kv[i+1]
	}
	return m
}

func (m *memStore) List() []storebackends.Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storebackends.Meta
	for k := range m.vals {
		out = append(out, storebackends.Meta{Name: k, Store: m.name, Version: "1"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (m *memStore) Values() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for k, v := range m.vals {
		out[k] = v
	}
	return out
}

func (m *memStore) Put(name, value string) (storebackends.Meta, error) {
	m.mu.Lock()
	m.vals[name] = value
	m.mu.Unlock()
	return storebackends.Meta{Name: name, Store: m.name, Version: "1"}, nil
}

func (m *memStore) Delete(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vals[name]; !ok {
		return storebackends.ErrNotFound
	}
	delete(m.vals, name)
	return nil
}

// syncedStore is a read-only synced store whose freshness the test sets.
type syncedStore struct {
	readOnly
	fresh    error
	onChange func()
}

func newSynced(name string, kv ...string) *syncedStore {
	return &syncedStore{readOnly: readOnly{newMem(name, kv...)}}
}

func (s *syncedStore) Start()                {}
func (s *syncedStore) Stop()                 {}
func (s *syncedStore) SetOnChange(f func())  { s.onChange = f }
func (s *syncedStore) Fresh(time.Time) error { return s.fresh }
func (s *syncedStore) LastSync() time.Time   { return time.Unix(1700000000, 0) }
func (s *syncedStore) Health(time.Time) storebackends.StoreStatus {
	return storebackends.StoreStatus{Store: s.m.name, Status: storebackends.StatusOK}
}

// readOnly hides memStore's write methods.
type readOnly struct{ m *memStore }

func (r readOnly) List() []storebackends.Meta { return r.m.List() }
func (r readOnly) Values() map[string]string  { return r.m.Values() }

func mustSet(t *testing.T, stores ...Store) *Set {
	t.Helper()
	s, err := New(stores)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPriorityEarlierStoreWins(t *testing.T) {
	first, second := newMem("a", "K", "from-a"), newMem("b", "K", "from-b", "ONLY_B", "b")
	s := mustSet(t, Store{"a", readOnly{first}}, Store{"b", second})
	now := time.Now()
	if v, err := s.Snapshot().Lookup("K", now); err != nil || v != "from-a" {
		t.Fatalf("K = %q, %v; want the first store's value", v, err)
	}
	if v, _ := s.Snapshot().Lookup("ONLY_B", now); v != "b" {
		t.Fatalf("ONLY_B = %q", v)
	}
	list := s.List()
	if len(list) != 2 || list[0].Name != "K" || list[0].Store != "a" {
		t.Fatalf("List = %+v", list)
	}
}

func TestLookupRefusesUnknownAndStale(t *testing.T) {
	vault := newSynced("vault", "GH", "ghp_x")
	s := mustSet(t, Store{"vault", vault})
	_, err := s.Snapshot().Lookup("NOPE", time.Now())
	var ua *UnavailableError
	if !errors.As(err, &ua) || ua.Name != "NOPE" || ua.Err != nil {
		t.Fatalf("unknown: %v", err)
	}
	stale := errors.New(`store "vault" last synced 10m ago`)
	vault.fresh = stale
	v, err := s.Snapshot().Lookup("GH", time.Now())
	if v != "" || !errors.As(err, &ua) || !errors.Is(err, stale) {
		t.Fatalf("stale lookup = %q, %v; want refused", v, err)
	}
	if got := err.Error(); got != `credential GH cannot be used: store "vault" last synced 10m ago` {
		t.Errorf("message %q", got)
	}
	if !s.Snapshot().Has("GH") {
		t.Error("a stale credential is still held (Has)")
	}
	if _, stale := s.Status(time.Now()); !stale {
		t.Error("Status does not report the stale store")
	}
}

// A name a synced store has listed is never served from another store,
// even after it disappears upstream, and writing it elsewhere is
// refused as shadowed.
func TestClaimsNeverFallBack(t *testing.T) {
	vault := newSynced("vault", "GH", "from-vault")
	builtin := newMem("builtin", "GH", "old-copy")
	s := mustSet(t, Store{"vault", vault}, Store{"builtin", builtin})
	delete(vault.m.vals, "GH")
	vault.onChange()
	if _, err := s.Snapshot().Lookup("GH", time.Now()); err == nil {
		t.Fatal("a name deleted from the synced store fell back to the builtin copy")
	}
	if _, _, err := s.Put("GH", "new"); !errors.Is(err, ErrShadowed) {
		t.Fatalf("Put of a claimed name = %v, want ErrShadowed", err)
	}
	if builtin.vals["GH"] != "old-copy" {
		t.Error("the shadowed write reached the store")
	}
	if _, _, err := s.Put("OTHER", "v"); err != nil {
		t.Fatalf("unclaimed Put: %v", err)
	}
}

func TestPutCreatedDeleteAndValidation(t *testing.T) {
	mem := newMem("builtin")
	s := mustSet(t, Store{"builtin", mem})
	if _, created, err := s.Put("TOKEN", "v1"); err != nil || !created {
		t.Fatalf("first Put: created=%v err=%v", created, err)
	}
	if _, created, err := s.Put("TOKEN", "v2"); err != nil || created {
		t.Fatalf("second Put: created=%v err=%v", created, err)
	}
	if v, _ := s.Snapshot().Lookup("TOKEN", time.Now()); v != "v2" {
		t.Fatalf("after Put: %q", v)
	}
	if _, _, err := s.Put("1bad", "v"); !errors.Is(err, storebackends.ErrInvalidInput) {
		t.Fatalf("bad name: %v", err)
	}
	if err := s.Delete("TOKEN"); err != nil {
		t.Fatal(err)
	}
	if s.Snapshot().Has("TOKEN") {
		t.Error("deleted credential still served")
	}
	if err := s.Delete("TOKEN"); !errors.Is(err, storebackends.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
	if got := s.Missing([]string{"TOKEN", "X"}); len(got) != 2 {
		t.Errorf("Missing = %v", got)
	}
}

func TestNoWritableStoreAndDuplicates(t *testing.T) {
	s := mustSet(t, Store{"ro", readOnly{newMem("ro")}})
	if _, _, err := s.Put("A", "v"); !errors.Is(err, ErrNoWritableStore) {
		t.Fatalf("Put without writable store = %v", err)
	}
	if _, err := New([]Store{{"x", newMem("x")}, {"x", newMem("x")}}); err == nil {
		t.Fatal("two stores with one name accepted")
	}
}

// A snapshot taken before a write keeps its values: one request sends
// and scrubs the same value even while a store rotates.
func TestSnapshotIsImmutable(t *testing.T) {
	mem := newMem("builtin", "K", "old")
	s := mustSet(t, Store{"builtin", mem})
	snap := s.Snapshot()
	if _, _, err := s.Put("K", "new"); err != nil {
		t.Fatal(err)
	}
	if v, _ := snap.Lookup("K", time.Now()); v != "old" {
		t.Fatalf("old snapshot changed to %q", v)
	}
	if v, _ := s.Snapshot().Lookup("K", time.Now()); v != "new" {
		t.Fatalf("new snapshot = %q", v)
	}
}
