package catalog

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// memStore is an in-memory Store; fail makes every call fail.
type memStore struct {
	mu   sync.Mutex
	docs map[string][]byte
	fail error
}

func newMemStore() *memStore { return &memStore{docs: map[string][]byte{}} }

func (m *memStore) ListServices(context.Context) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var out []Record
	for _, name := range slices.Sorted(maps.Keys(m.docs)) {
		out = append(out, Record{Name: name, Doc: m.docs[name], UpdatedAt: time.Unix(1, 0)})
	}
	return out, nil
}

func (m *memStore) PutService(_ context.Context, name string, doc []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.docs[name] = doc
	return nil
}

func (m *memStore) DeleteService(_ context.Context, name string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return false, m.fail
	}
	_, ok := m.docs[name]
	delete(m.docs, name)
	return ok, nil
}

func svc(name, host string) services.Service {
	return services.Service{Name: name, Host: host, Auth: services.Auth{Type: "bearer", Token: "T"}}
}

var ctx = context.Background()

func mustOpen(t *testing.T, st Store) *Catalog {
	t.Helper()
	c, err := Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func names(c *Catalog) []string {
	var out []string
	for _, s := range c.Services().Services() {
		out = append(out, s.Name+"="+s.Host)
	}
	return out
}

func TestPutDeleteSurviveReopen(t *testing.T) {
	st := newMemStore()
	c := mustOpen(t, st)
	for _, s := range []services.Service{svc("b", "b.example.com"), svc("a", "a.example.com"), svc("a", "a2.example.com")} {
		if err := c.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if found, err := c.Delete(ctx, "b"); !found || err != nil {
		t.Fatalf("delete = %v, %v", found, err)
	}
	if found, _ := c.Delete(ctx, "b"); found {
		t.Error("deleted twice")
	}
	if got := names(mustOpen(t, st)); !slices.Equal(got, []string{"a=a2.example.com"}) {
		t.Fatalf("reopened catalog = %v", got)
	}
}

func TestStoreErrorLeavesTableUnchanged(t *testing.T) {
	st := newMemStore()
	c := mustOpen(t, st)
	if err := c.Put(ctx, svc("ok", "ok.example.com")); err != nil {
		t.Fatal(err)
	}
	down := errors.New("state postgres: connection refused")
	st.fail = down
	if err := c.Put(ctx, svc("new", "new.example.com")); !errors.Is(err, down) {
		t.Fatalf("Put = %v, want the store's error", err)
	}
	if found, err := c.Delete(ctx, "ok"); !errors.Is(err, down) || found {
		t.Fatalf("Delete = %v, %v, want the store's error", found, err)
	}
	if err := c.Reload(ctx); !errors.Is(err, down) {
		t.Fatalf("Reload = %v", err)
	}
	if got := names(c); !slices.Equal(got, []string{"ok=ok.example.com"}) {
		t.Fatalf("after failures the table is %v", got)
	}
	if _, err := Open(ctx, st); !errors.Is(err, down) {
		t.Fatalf("Open = %v", err)
	}
}

func TestInvalidServiceChangesNothing(t *testing.T) {
	st := newMemStore()
	c := mustOpen(t, st)
	if err := c.Put(ctx, svc("ok", "ok.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, svc("bad", "https://x.example.com")); err == nil {
		t.Fatal("invalid service accepted")
	}
	if len(st.docs) != 1 || len(c.Services().Services()) != 1 {
		t.Error("a refused service changed the catalog")
	}
}

func TestReloadSeesAnotherBroker(t *testing.T) {
	st := newMemStore()
	a, b := mustOpen(t, st), mustOpen(t, st)
	if err := a.Put(ctx, svc("x", "x.example.com")); err != nil {
		t.Fatal(err)
	}
	if len(b.Services().Services()) != 0 {
		t.Fatal("b changed without a reload")
	}
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := names(b); !slices.Equal(got, []string{"x=x.example.com"}) {
		t.Fatalf("b after reload = %v", got)
	}
	if _, err := a.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(ctx); err != nil || len(b.Services().Services()) != 0 {
		t.Fatalf("b after a's delete = %v, %v", names(b), err)
	}
}

// A stored service this broker cannot read is left out (fail closed:
// its host is no longer served) and named, while the rest of the table
// opens and keeps following the store: one bad row neither stops a
// start nor freezes the table. A field a newer broker added is ignored.
func TestBadStoredServiceIsSkipped(t *testing.T) {
	for label, doc := range map[string]string{
		"invalid host": `{"name":"x","host":"a..b","auth":{"type":"passthrough"}}`,
		"malformed":    `{`,
		"other name":   `{"name":"y","host":"x.example.com","auth":{"type":"passthrough"}}`,
	} {
		st := newMemStore()
		st.docs["ok"] = []byte(`{"name":"ok","host":"ok.example.com","auth":{"type":"passthrough"}}`)
		st.docs["x"] = []byte(doc)
		c, err := Open(ctx, st)
		var skipped *SkippedError
		if !errors.As(err, &skipped) || !slices.Equal(skipped.Names, []string{"x"}) || c == nil {
			t.Fatalf("%s: Open = %v", label, err)
		}
		if got := names(c); !slices.Equal(got, []string{"ok=ok.example.com"}) {
			t.Errorf("%s: table %v", label, got)
		}
	}
	st := newMemStore()
	c := mustOpen(t, st)
	c.Put(ctx, svc("ok", "ok.example.com"))
	c.Put(ctx, svc("old", "old.example.com"))
	st.docs["x"] = []byte(`{`)
	st.docs["newer"] = []byte(`{"name":"newer","host":"n.example.com","auth":{"type":"passthrough"},"future":1}`)
	delete(st.docs, "old") // another broker deletes a service
	var skipped *SkippedError
	if err := c.Reload(ctx); !errors.As(err, &skipped) || !slices.Equal(skipped.Names, []string{"x"}) {
		t.Fatalf("Reload = %v", err)
	}
	if got := names(c); !slices.Equal(got, []string{"newer=n.example.com", "ok=ok.example.com"}) {
		t.Fatalf("after a reload with a bad row the table is %v", got)
	}
}

func TestReadFileOfAnEarlierRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "services.json")
	os.WriteFile(path, []byte(`[{"name":"gh","host":"api.github.com","auth":{"type":"bearer","token":"GH"}}]`), 0o600)
	svcs, err := ReadFile(path)
	if err != nil || len(svcs) != 1 || svcs[0].Name != "gh" {
		t.Fatalf("ReadFile = %+v, %v", svcs, err)
	}
	os.WriteFile(path, []byte(`[{"name":"x","host":"a..b","auth":{"type":"passthrough"}}]`), 0o600)
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("invalid file: %v", err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// readHook is a store that runs hook once, after a ListServices has read
// and before it returns.
type readHook struct {
	*memStore
	once sync.Once
	hook func()
}

func (r *readHook) ListServices(ctx context.Context) ([]Record, error) {
	recs, err := r.memStore.ListServices(ctx)
	if r.hook != nil {
		r.once.Do(r.hook)
	}
	return recs, err
}

// A Put that lands while a Reload is reading is not taken back by the
// Reload's older read, and a Reload does not wait for a Put's store
// I/O.
func TestReloadKeepsConcurrentPut(t *testing.T) {
	st := &readHook{memStore: newMemStore()}
	c := mustOpen(t, st)
	st.hook = func() {
		if err := c.Put(ctx, svc("new", "new.example.com")); err != nil {
			t.Error(err)
		}
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := names(c); !slices.Equal(got, []string{"new=new.example.com"}) {
		t.Fatalf("after a Put during a Reload the table is %v", got)
	}
}
