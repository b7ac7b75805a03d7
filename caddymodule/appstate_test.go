package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// oldDataDir makes a data dir holding an older release's services.json
// with the named services.
func oldDataDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var svcs []services.Service
	for _, n := range names {
		svcs = append(svcs, bearer(n, n+".example.com", "TOKEN"))
	}
	data, err := json.Marshal(svcs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "services.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// importInto runs the services import of the app on dataDir into db,
// as loadShared does, with empty as Empty reported.
func importInto(t *testing.T, db *state.DB, dataDir string, empty bool) *catalog.Catalog {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.Open(ctx, catalogStore{db})
	if err != nil {
		t.Fatal(err)
	}
	a := &App{DataDir: dataDir, logger: zap.NewNop()}
	if err := a.importServices(ctx, db, cat, empty); err != nil {
		t.Fatalf("import from %s: %v", dataDir, err)
	}
	return cat
}

// imported reports whether dataDir's services.json was imported (and
// so renamed).
func imported(t *testing.T, dataDir string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(dataDir, "services.json"))
	renamed, _ := filepath.Glob(filepath.Join(dataDir, "services.json.imported-*"))
	switch {
	case os.IsNotExist(err) && len(renamed) == 1:
		return true
	case err == nil && len(renamed) == 0:
		return false
	}
	t.Fatalf("services.json: %v, renamed copies %v", err, renamed)
	return false
}

func serviceNames(cat *catalog.Catalog) []string {
	var out []string
	for _, s := range cat.Services().Services() {
		out = append(out, s.Name)
	}
	return out
}

// A new database takes the services of the first data dir that claims
// it; a second broker that also saw it empty (Empty is not atomic)
// leaves its own file alone instead of mixing its services in.
func TestImportServicesFirstClaimWins(t *testing.T) {
	db := openTestStateDB(t, zap.NewNop())
	a, b := oldDataDir(t, "alpha"), oldDataDir(t, "beta")
	importInto(t, db, a, true)
	cat := importInto(t, db, b, true)
	if got := serviceNames(cat); len(got) != 1 || got[0] != "alpha" {
		t.Fatalf("services = %v, want only the first data dir's", got)
	}
	if !imported(t, a) || imported(t, b) {
		t.Fatal("want the first file renamed and the second left in place")
	}
	// Restarted on the same data dir with a services.json put back:
	// imported before, so not again.
	again := oldDataDir(t, "gamma")
	if err := os.Rename(filepath.Join(again, "services.json"), filepath.Join(a, "services.json")); err != nil {
		t.Fatal(err)
	}
	if got := serviceNames(importInto(t, db, a, false)); len(got) != 1 || got[0] != "alpha" {
		t.Fatalf("a second import happened: %v", got)
	}
}

// Brokers racing on one new database: exactly one imports.
func TestImportServicesRace(t *testing.T) {
	db := openTestStateDB(t, zap.NewNop())
	dirs := []string{oldDataDir(t, "one"), oldDataDir(t, "two"), oldDataDir(t, "three")}
	var wg sync.WaitGroup
	for _, d := range dirs {
		wg.Go(func() {
			cat, err := catalog.Open(context.Background(), catalogStore{db})
			if err != nil {
				t.Error(err)
				return
			}
			a := &App{DataDir: d, logger: zap.NewNop()}
			if err := a.importServices(context.Background(), db, cat, true); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, d := range dirs {
		if imported(t, d) {
			n++
		}
	}
	cat := importInto(t, db, t.TempDir(), false)
	if n != 1 || len(serviceNames(cat)) != 1 {
		t.Fatalf("%d imports, services %v: want exactly one", n, serviceNames(cat))
	}
}

// A database in use (it has services, no import claim) imports
// nothing; an import this data dir claimed but did not finish (a crash
// half way) is finished on the next start.
func TestImportServicesInUseAndResumed(t *testing.T) {
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	if err := db.PutService(ctx, "live", mustJSON(t, bearer("live", "live.example.com", "TOKEN"))); err != nil {
		t.Fatal(err)
	}
	dir := oldDataDir(t, "old")
	importInto(t, db, dir, false)
	if imported(t, dir) {
		t.Fatal("imported into a database in use")
	}

	db2 := openTestStateDB(t, zap.NewNop())
	dir2 := oldDataDir(t, "first", "second")
	id2, err := instanceID(dir2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db2.ClaimMeta(ctx, metaImportClaim, id2); err != nil {
		t.Fatal(err)
	}
	if err := db2.PutService(ctx, "first", mustJSON(t, bearer("first", "first.example.com", "TOKEN"))); err != nil {
		t.Fatal(err)
	}
	cat := importInto(t, db2, dir2, false)
	if got := serviceNames(cat); len(got) != 2 || !imported(t, dir2) {
		t.Fatalf("resumed import: services %v", got)
	}
}

// Brokers of a cluster whose data dirs have the same path (/data on
// each host) are still different importers: an import claimed by one
// is not taken over by another.
func TestImportServicesClaimIsPerInstance(t *testing.T) {
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	dir := oldDataDir(t, "mine")
	// Another broker, its data dir at the same path, claimed the import
	// and has not finished it yet.
	if _, err := db.ClaimMeta(ctx, metaImportClaim, "0123456789abcdef-another-host"); err != nil {
		t.Fatal(err)
	}
	cat := importInto(t, db, dir, true)
	if imported(t, dir) || len(serviceNames(cat)) != 0 {
		t.Fatalf("a second broker imported too: %v", serviceNames(cat))
	}
	// The id is the data dir's own and stays.
	a, err := instanceID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := instanceID(dir); err != nil || a != b {
		t.Fatalf("instance id %q then %q (%v)", a, b, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hookedSessions runs after once, after the first All has read the
// sessions and before it returns them: what another broker does at that
// moment of a start-up.
type hookedSessions struct {
	sessions.Store
	once  sync.Once
	after func()
}

func (h *hookedSessions) All(ctx context.Context, expiredAfter time.Time) ([]sessions.Record, error) {
	recs, err := h.Store.All(ctx, expiredAfter)
	h.once.Do(h.after)
	return recs, err
}

// A session another broker revokes while this one loads its sessions at
// start-up is revoked here too, at once, not at the next full reload.
func TestStartupLoadMissesNoChange(t *testing.T) {
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	other := sessions.NewRegistry(sessionStore{db})
	sess, token, err := other.Create(ctx, sessions.Spec{Services: []string{"x"}, TTL: time.Hour, NewPlaceholder: func() (string, error) { return "ph", nil }})
	if err != nil {
		t.Fatal(err)
	}
	// The feed has delivered the revocation once this subscriber, there
	// before the load began, has seen it.
	delivered := make(chan struct{})
	var seen sync.Once
	defer db.Subscribe(func(ch state.Change) {
		if ch == (state.Change{Topic: state.TopicSessions, Key: sess.ID}) {
			seen.Do(func() { close(delivered) })
		}
	})()
	hook := &hookedSessions{Store: sessionStore{db}, after: func() {
		if _, err := other.Revoke(ctx, sess.ID); err != nil {
			t.Error(err)
		}
		<-delivered
	}}
	a := &App{DataDir: t.TempDir(), logger: zap.NewNop()}
	sh, err := a.loadShared(ctx, db, sharedStores{catalog: catalogStore{db}, sessions: hook}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.stopFeed)
	eventually(t, 5*time.Second, "the revocation made during the load applies", func() bool {
		_, err := sh.sessions.Authenticate(token)
		return errors.Is(err, sessions.ErrRevoked)
	})
}
