package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// behaviour is a test that runs against both backends, on a fresh
// database opened with a settable clock.
type behaviour struct {
	name string
	run  func(t *testing.T, db *DB, clk *clock)
}

var behaviours = []behaviour{
	{"services round trip", testServices},
	{"session round trip", testSessionRoundTrip},
	{"session insert conflicts", testSessionConflicts},
	{"revocation is idempotent", testRevocation},
	{"activity batches", testActivity},
	{"expired sessions are deleted", testDeleteExpired},
	{"builtin header first writer wins", testBuiltinHeader},
	{"credential versions", testCredentialVersions},
	{"credential needs a header", testCredentialNeedsHeader},
	{"import builtin", testImportBuiltin},
	{"storage put get", testStoragePutGet},
	{"storage list and delete by prefix", testStoragePrefix},
	{"storage create is first writer wins", testStorageCreate},
	{"locks", testLocks},
	{"times outside the stored range", testTimeRange},
	{"meta", testMeta},
	{"meta claim first writer wins", testMetaClaim},
	{"empty", testEmpty},
	{"writes announce changes", testLocalFeed},
	{"subscribers run one at a time in order", testFeedSerial},
	{"concurrent writes", testConcurrentWrites},
}

func TestBehaviours(t *testing.T) { runBehaviours(t, behaviours) }

// runBehaviours runs each behaviour on each backend, on a fresh
// database with its own settable clock.
func runBehaviours(t *testing.T, list []behaviour) {
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, bh := range list {
			t.Run(bh.name, func(t *testing.T) {
				clk := newClock()
				cfg := b.config(t)
				cfg.Now = clk.Now
				bh.run(t, open(t, cfg), clk)
			})
		}
	})
}

var ctx = context.Background()

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testServices(t *testing.T, db *DB, clk *clock) {
	if got, err := db.ListServices(ctx); err != nil || len(got) != 0 {
		t.Fatalf("new database: %v, %v", got, err)
	}
	must(t, db.PutService(ctx, "github", []byte(`{"host":"api.github.com"}`)))
	t1 := clk.Now()
	clk.Add(time.Minute)
	must(t, db.PutService(ctx, "anthropic", []byte(`{"host":"api.anthropic.com"}`)))
	clk.Add(time.Minute)
	must(t, db.PutService(ctx, "github", []byte(`{"host":"api.github.com","v":2}`)))
	got, err := db.ListServices(ctx)
	must(t, err)
	want := []ServiceRow{
		{"anthropic", []byte(`{"host":"api.anthropic.com"}`), t1.Add(time.Minute)},
		{"github", []byte(`{"host":"api.github.com","v":2}`), clk.Now()},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListServices = %+v, want %+v", got, want)
	}
	if ok, err := db.DeleteService(ctx, "github"); err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, err := db.DeleteService(ctx, "github"); err != nil || ok {
		t.Fatalf("delete again: %v %v", ok, err)
	}
	if got, _ := db.ListServices(ctx); len(got) != 1 || got[0].Name != "anthropic" {
		t.Fatalf("after delete: %+v", got)
	}
}

func session(id string, hashByte byte, created time.Time) SessionRow {
	return SessionRow{
		ID:           id,
		TokenHash:    [32]byte{hashByte, 1, 2, 3},
		Services:     []string{"github", "anthropic"},
		Placeholders: map[string]string{"GITHUB_TOKEN": "agvph_1", "ANTHROPIC_KEY": "agvph_2"},
		Agent:        "claude",
		CreatedAt:    created,
		ExpiresAt:    created.Add(time.Hour),
	}
}

func testSessionRoundTrip(t *testing.T, db *DB, clk *clock) {
	if _, ok, err := db.Session(ctx, "nope"); err != nil || ok {
		t.Fatalf("missing session: %v %v", ok, err)
	}
	s := session("s1", 0xaa, clk.Now())
	must(t, db.InsertSession(ctx, s))
	got, ok, err := db.Session(ctx, "s1")
	if err != nil || !ok || !reflect.DeepEqual(got, s) {
		t.Fatalf("Session = %+v %v %v, want %+v", got, ok, err, s)
	}
	// Empty scope and no placeholders come back empty, not nil JSON.
	bare := SessionRow{ID: "s2", TokenHash: [32]byte{0xbb}, CreatedAt: clk.Now(), ExpiresAt: clk.Now().Add(2 * time.Hour)}
	must(t, db.InsertSession(ctx, bare))
	got, _, err = db.Session(ctx, "s2")
	must(t, err)
	if got.Services == nil || len(got.Services) != 0 || got.Placeholders == nil || len(got.Placeholders) != 0 || got.RevokedAt != nil || got.LastUsed != nil {
		t.Fatalf("bare session = %+v", got)
	}
	// ListSessions: those expiring after the given time, oldest first.
	list, err := db.ListSessions(ctx, clk.Now().Add(90*time.Minute))
	must(t, err)
	if len(list) != 1 || list[0].ID != "s2" {
		t.Fatalf("ListSessions(+90m) = %+v", list)
	}
	list, err = db.ListSessions(ctx, clk.Now())
	must(t, err)
	if len(list) != 2 || list[0].ID != "s1" || list[1].ID != "s2" || !reflect.DeepEqual(list[0], s) {
		t.Fatalf("ListSessions(now) = %+v", list)
	}
	// expires_at > t, strictly.
	if list, _ := db.ListSessions(ctx, s.ExpiresAt); len(list) != 1 {
		t.Fatalf("ListSessions(s1's expiry) = %+v", list)
	}
}

func testSessionConflicts(t *testing.T, db *DB, clk *clock) {
	must(t, db.InsertSession(ctx, session("s1", 1, clk.Now())))
	if err := db.InsertSession(ctx, session("s1", 2, clk.Now())); !errors.Is(err, ErrConflict) {
		t.Fatalf("same id: %v", err)
	}
	if err := db.InsertSession(ctx, session("s2", 1, clk.Now())); !errors.Is(err, ErrConflict) {
		t.Fatalf("same token hash: %v", err)
	}
	err := db.InsertSession(ctx, session("s1", 2, clk.Now()))
	if want := "state " + db.Backend() + ": insert session s1: "; err == nil || err.Error()[:len(want)] != want {
		t.Fatalf("error %q does not start with %q", err, want)
	}
}

func testRevocation(t *testing.T, db *DB, clk *clock) {
	must(t, db.InsertSession(ctx, session("s1", 1, clk.Now())))
	first := clk.Now().Add(time.Minute)
	if ok, err := db.RevokeSession(ctx, "s1", first); err != nil || !ok {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	if ok, err := db.RevokeSession(ctx, "s1", first.Add(time.Hour)); err != nil || !ok {
		t.Fatalf("revoke again: %v %v", ok, err)
	}
	got, _, err := db.Session(ctx, "s1")
	must(t, err)
	if got.RevokedAt == nil || !got.RevokedAt.Equal(first) {
		t.Fatalf("revoked_at = %v, want the first %v", got.RevokedAt, first)
	}
	if ok, err := db.RevokeSession(ctx, "nope", first); err != nil || ok {
		t.Fatalf("revoke unknown: %v %v", ok, err)
	}
}

func testActivity(t *testing.T, db *DB, clk *clock) {
	must(t, db.InsertSession(ctx, session("a", 1, clk.Now())))
	must(t, db.InsertSession(ctx, session("b", 2, clk.Now())))
	must(t, db.AddSessionActivity(ctx, nil))
	t1, t2 := clk.Now().Add(time.Second), clk.Now().Add(2*time.Second)
	must(t, db.AddSessionActivity(ctx, []SessionActivity{
		{ID: "a", Requests: 3, LastUsed: t2},
		{ID: "b", Requests: 1, LastUsed: t1},
		{ID: "gone", Requests: 9, LastUsed: t1}, // deleted meanwhile: skipped
	}))
	// A later batch with an older LastUsed (another instance's clock)
	// adds its count but does not move last_used back.
	must(t, db.AddSessionActivity(ctx, []SessionActivity{{ID: "a", Requests: 4, LastUsed: t1}, {ID: "b", Requests: 1, LastUsed: t2}}))
	a, _, err := db.Session(ctx, "a")
	must(t, err)
	b, _, err := db.Session(ctx, "b")
	must(t, err)
	if a.Requests != 7 || a.LastUsed == nil || !a.LastUsed.Equal(t2) {
		t.Fatalf("a: requests %d last_used %v, want 7 and %v", a.Requests, a.LastUsed, t2)
	}
	if b.Requests != 2 || b.LastUsed == nil || !b.LastUsed.Equal(t2) {
		t.Fatalf("b: requests %d last_used %v, want 2 and %v", b.Requests, b.LastUsed, t2)
	}
}

func testDeleteExpired(t *testing.T, db *DB, clk *clock) {
	now := clk.Now()
	must(t, db.InsertSession(ctx, session("old", 1, now.Add(-3*time.Hour)))) // expired 2h ago
	must(t, db.InsertSession(ctx, session("recent", 2, now.Add(-90*time.Minute))))
	must(t, db.InsertSession(ctx, session("live", 3, now)))
	n, err := db.DeleteSessionsExpiredBefore(ctx, now.Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("deleted %d, %v; want 1", n, err)
	}
	n, err = db.DeleteSessionsExpiredBefore(ctx, now)
	if err != nil || n != 1 {
		t.Fatalf("deleted %d, %v; want 1", n, err)
	}
	if list, _ := db.ListSessions(ctx, time.Time{}); len(list) != 1 || list[0].ID != "live" {
		t.Fatalf("left: %+v", list)
	}
}

func testBuiltinHeader(t *testing.T, db *DB, clk *clock) {
	if _, ok, err := db.BuiltinHeader(ctx, "default"); err != nil || ok {
		t.Fatalf("new store: %v %v", ok, err)
	}
	got, err := db.CreateBuiltinHeader(ctx, "default", []byte(`{"salt":"first"}`))
	if err != nil || string(got) != `{"salt":"first"}` {
		t.Fatalf("create: %s %v", got, err)
	}
	got, err = db.CreateBuiltinHeader(ctx, "default", []byte(`{"salt":"second"}`))
	if err != nil || string(got) != `{"salt":"first"}` {
		t.Fatalf("second create = %s %v, want the first header", got, err)
	}
	if doc, ok, err := db.BuiltinHeader(ctx, "default"); err != nil || !ok || string(doc) != `{"salt":"first"}` {
		t.Fatalf("header: %s %v %v", doc, ok, err)
	}
	if _, ok, _ := db.BuiltinHeader(ctx, "other"); ok {
		t.Fatal("a header for a store nobody created")
	}
}

func cred(name string, version uint64, at time.Time) CredentialRow {
	return CredentialRow{Name: name, Version: version, UpdatedAt: at,
		Nonce: []byte(fmt.Sprintf("nonce-%s-%d", name, version)), Ciphertext: []byte{0, 1, 2, 0xff, byte(version)}}
}

func testCredentialVersions(t *testing.T, db *DB, clk *clock) {
	_, err := db.CreateBuiltinHeader(ctx, "s", []byte(`{}`))
	must(t, err)
	must(t, db.PutCredential(ctx, "s", cred("K", 1, clk.Now())))
	for _, c := range []CredentialRow{cred("K", 1, clk.Now()), cred("K", 3, clk.Now()), cred("NEW", 2, clk.Now())} {
		if err := db.PutCredential(ctx, "s", c); !errors.Is(err, ErrConflict) {
			t.Fatalf("put %s v%d: %v, want ErrConflict", c.Name, c.Version, err)
		}
	}
	clk.Add(time.Second)
	v2 := cred("K", 2, clk.Now())
	must(t, db.PutCredential(ctx, "s", v2))
	if err := db.PutCredential(ctx, "s", cred("K", 2, clk.Now())); !errors.Is(err, ErrConflict) {
		t.Fatalf("second v2: %v", err)
	}
	if err := db.PutCredential(ctx, "s", cred("K", 0, clk.Now())); err == nil {
		t.Fatal("version 0 accepted")
	}
	a := cred("A", 1, clk.Now())
	must(t, db.PutCredential(ctx, "s", a))
	got, err := db.ListCredentials(ctx, "s")
	must(t, err)
	if want := []CredentialRow{a, v2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ListCredentials = %+v, want %+v", got, want)
	}
	if ok, err := db.DeleteCredential(ctx, "s", "K"); err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, err := db.DeleteCredential(ctx, "s", "K"); err != nil || ok {
		t.Fatalf("delete again: %v %v", ok, err)
	}
	must(t, db.PutCredential(ctx, "s", cred("K", 1, clk.Now()))) // a new name again
	if got, _ := db.ListCredentials(ctx, "other"); len(got) != 0 {
		t.Fatalf("another store sees %+v", got)
	}
}

func testCredentialNeedsHeader(t *testing.T, db *DB, clk *clock) {
	if err := db.PutCredential(ctx, "headless", cred("K", 1, clk.Now())); err == nil {
		t.Fatal("a record stored for a store without a header")
	}
}

func testImportBuiltin(t *testing.T, db *DB, clk *clock) {
	rows := []CredentialRow{cred("A", 7, clk.Now()), cred("B", 1, clk.Now().Add(-time.Hour))}
	must(t, db.ImportBuiltin(ctx, "s", []byte(`{"kdf":"x"}`), rows))
	got, err := db.ListCredentials(ctx, "s")
	must(t, err)
	if !reflect.DeepEqual(got, rows) {
		t.Fatalf("imported %+v, want %+v", got, rows)
	}
	if doc, _, _ := db.BuiltinHeader(ctx, "s"); string(doc) != `{"kdf":"x"}` {
		t.Fatalf("header %s", doc)
	}
	if err := db.ImportBuiltin(ctx, "s", []byte(`{}`), nil); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("second import: %v", err)
	}
	// A failed import changes nothing: the duplicate name rolls it all back.
	bad := []CredentialRow{cred("X", 1, clk.Now()), cred("X", 2, clk.Now())}
	if err := db.ImportBuiltin(ctx, "t", []byte(`{}`), bad); err == nil {
		t.Fatal("import with a duplicate name succeeded")
	}
	if _, ok, _ := db.BuiltinHeader(ctx, "t"); ok {
		t.Fatal("a failed import left its header")
	}
}

func testStoragePutGet(t *testing.T, db *DB, clk *clock) {
	if _, _, ok, err := db.StorageGet(ctx, "k"); err != nil || ok {
		t.Fatalf("missing: %v %v", ok, err)
	}
	val := []byte{0, 1, 2, 3, 0xfe, 0xff, 'x'}
	must(t, db.StoragePut(ctx, "certificates/ca/root.crt", val, clk.Now()))
	got, mod, ok, err := db.StorageGet(ctx, "certificates/ca/root.crt")
	if err != nil || !ok || !bytes.Equal(got, val) || !mod.Equal(clk.Now()) {
		t.Fatalf("get: %x %v %v %v", got, mod, ok, err)
	}
	clk.Add(time.Hour)
	must(t, db.StoragePut(ctx, "certificates/ca/root.crt", nil, clk.Now()))
	got, mod, ok, err = db.StorageGet(ctx, "certificates/ca/root.crt")
	if err != nil || !ok || len(got) != 0 || !mod.Equal(clk.Now()) {
		t.Fatalf("get after overwrite: %x %v %v %v", got, mod, ok, err)
	}
}

func testStoragePrefix(t *testing.T, db *DB, clk *clock) {
	for i, k := range []string{"a", "a/b", "a/b/c", "ab", "A/x", "a_/x", "a%/y", "é/x", "é/", "éa"} {
		must(t, db.StoragePut(ctx, k, bytes.Repeat([]byte{'v'}, i), clk.Now()))
	}
	keys := func(prefix string) []string {
		t.Helper()
		list, err := db.StorageList(ctx, prefix)
		must(t, err)
		var out []string
		for _, e := range list {
			out = append(out, e.Key)
		}
		return out
	}
	sizes := map[string]int64{}
	all, err := db.StorageList(ctx, "")
	must(t, err)
	for _, e := range all {
		sizes[e.Key] = e.Size
		if !e.Modified.Equal(clk.Now()) {
			t.Errorf("%s modified %v", e.Key, e.Modified)
		}
	}
	if len(all) != 10 || sizes["a"] != 0 || sizes["ab"] != 3 || sizes["éa"] != 9 || sizes["a/b/c"] != 2 {
		t.Fatalf("list all: %+v", all)
	}
	for prefix, want := range map[string][]string{
		"a":   {"a", "a/b", "a/b/c"}, // not ab, A/x, a_/x
		"a/b": {"a/b", "a/b/c"},
		"a_":  {"a_/x"}, // _ is no wildcard
		"a%":  {"a%/y"}, // nor %
		"é":   {"é/", "é/x"},
		"zz":  nil,
	} {
		if got := keys(prefix); !reflect.DeepEqual(got, want) {
			t.Errorf("StorageList(%q) = %q, want %q", prefix, got, want)
		}
	}
	if ok, err := db.StorageDelete(ctx, "a_"); err != nil || !ok {
		t.Fatalf("delete a_: %v %v", ok, err)
	}
	if ok, err := db.StorageDelete(ctx, "a"); err != nil || !ok {
		t.Fatalf("delete a: %v %v", ok, err)
	}
	if ok, err := db.StorageDelete(ctx, "a"); err != nil || ok {
		t.Fatalf("delete a again: %v %v", ok, err)
	}
	if got, want := keys(""), []string{"A/x", "a%/y", "ab", "é/", "é/x", "éa"}; !sameSet(got, want) {
		t.Fatalf("left %q, want %q", got, want)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func testStorageCreate(t *testing.T, db *DB, clk *clock) {
	const key = "pki/authorities/local/root.crt"
	if ok, err := db.StorageCreate(ctx, key, []byte("first"), clk.Now()); err != nil || !ok {
		t.Fatalf("first create = %v %v", ok, err)
	}
	if ok, err := db.StorageCreate(ctx, key, []byte("second"), clk.Now()); err != nil || ok {
		t.Fatalf("second create = %v %v", ok, err)
	}
	if v, _, ok, err := db.StorageGet(ctx, key); err != nil || !ok || string(v) != "first" {
		t.Fatalf("stored %q %v %v, want the first writer's", v, ok, err)
	}
	var wg sync.WaitGroup
	won := make([]bool, 8)
	for i := range won {
		wg.Go(func() {
			ok, err := db.StorageCreate(ctx, "race", []byte(fmt.Sprint(i)), clk.Now())
			if err != nil {
				t.Error(err)
			}
			won[i] = ok
		})
	}
	wg.Wait()
	winners := 0
	for _, w := range won {
		if w {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d racing creates won, want 1", winners)
	}
}

func testTimeRange(t *testing.T, db *DB, clk *clock) {
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)   // past 2262: UnixNano would wrap to 1715
	early := time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) // before 1677
	refused := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.HasPrefix(err.Error(), "state "+db.Backend()+": ") {
			t.Errorf("%s: %v, want a refusal", what, err)
		}
	}
	now := clk.Now()
	s := session("far", 1, now)
	s.ExpiresAt = far
	refused("a session expiring in 2300", db.InsertSession(ctx, s))
	s = session("zero", 2, now)
	s.CreatedAt = time.Time{}
	refused("a session created at the zero time", db.InsertSession(ctx, s))
	s = session("zero-revoked", 3, now)
	s.RevokedAt = &time.Time{}
	refused("a session revoked at the zero time", db.InsertSession(ctx, s))
	for _, id := range []string{"far", "zero", "zero-revoked"} {
		if _, ok, err := db.Session(ctx, id); err != nil || ok {
			t.Errorf("refused session %s stored: %v %v", id, ok, err)
		}
	}
	must(t, db.InsertSession(ctx, session("s1", 4, now)))
	_, err := db.RevokeSession(ctx, "s1", time.Time{})
	refused("a revocation at the zero time", err)
	if got, _, _ := db.Session(ctx, "s1"); got.RevokedAt != nil {
		t.Errorf("revoked at %v", got.RevokedAt)
	}
	refused("activity in 2300", db.AddSessionActivity(ctx, []SessionActivity{{ID: "s1", Requests: 1, LastUsed: far}}))
	refused("a storage value modified in 1600", db.StoragePut(ctx, "k", []byte("v"), early))
	_, err = db.StorageCreate(ctx, "k", []byte("v"), far)
	refused("a storage value created in 2300", err)
	if _, err := db.CreateBuiltinHeader(ctx, "st", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	refused("a credential updated at the zero time", db.PutCredential(ctx, "st", cred("K", 1, time.Time{})))

	// Query bounds outside the range compare as the times would.
	if list, err := db.ListSessions(ctx, time.Time{}); err != nil || len(list) != 1 {
		t.Errorf("sessions expiring after the zero time: %d %v", len(list), err)
	}
	if list, err := db.ListSessions(ctx, far); err != nil || len(list) != 0 {
		t.Errorf("sessions expiring after 2300: %d %v", len(list), err)
	}
	if n, err := db.DeleteSessionsExpiredBefore(ctx, early); err != nil || n != 0 {
		t.Errorf("deleted before 1600: %d %v", n, err)
	}
	// The edges of the range are storable and come back exactly.
	for _, edge := range []time.Time{minStored, maxStored} {
		must(t, db.StoragePut(ctx, "edge", nil, edge))
		if _, mod, _, err := db.StorageGet(ctx, "edge"); err != nil || !mod.Equal(edge) {
			t.Errorf("edge %v came back as %v %v", edge, mod, err)
		}
	}
}

func testLocks(t *testing.T, db *DB, clk *clock) {
	take := func(owner string, want bool) {
		t.Helper()
		if ok, err := db.TryLock(ctx, "issue", owner, time.Minute); err != nil || ok != want {
			t.Fatalf("TryLock(%s) = %v %v, want %v", owner, ok, err, want)
		}
	}
	take("A", true)
	take("B", false)
	take("A", true) // the owner's again: extended
	if ok, err := db.RefreshLock(ctx, "issue", "B", time.Minute); err != nil || ok {
		t.Fatalf("refresh by B: %v %v", ok, err)
	}
	clk.Add(time.Hour) // the config clock does not expire locks
	take("B", false)
	ageLock(t, db, "issue", time.Minute) // expires <= the database's now: expired
	take("B", true)                      // stolen
	if ok, err := db.RefreshLock(ctx, "issue", "A", time.Minute); err != nil || ok {
		t.Fatalf("refresh by A after the steal: %v %v", ok, err)
	}
	if ok, err := db.RefreshLock(ctx, "issue", "B", 2*time.Hour); err != nil || !ok {
		t.Fatalf("refresh by B: %v %v", ok, err)
	}
	ageLock(t, db, "issue", time.Hour) // B's refreshed expiry has not passed
	take("A", false)
	must(t, db.Unlock(ctx, "issue", "A")) // not A's: stays
	take("A", false)
	must(t, db.Unlock(ctx, "issue", "B"))
	take("A", true)
	if ok, err := db.TryLock(ctx, "other", "B", time.Minute); err != nil || !ok {
		t.Fatalf("a second lock: %v %v", ok, err)
	}
	for _, ttl := range []time.Duration{0, -time.Second, MaxLockTTL + 1} {
		if _, err := db.TryLock(ctx, "ttl", "A", ttl); err == nil {
			t.Errorf("TryLock with ttl %v succeeded", ttl)
		}
		if _, err := db.RefreshLock(ctx, "other", "B", ttl); err == nil {
			t.Errorf("RefreshLock with ttl %v succeeded", ttl)
		}
	}
}

// ageLock moves a lock's expiry d into the past, as if d had passed on
// the database's clock.
func ageLock(t *testing.T, db *DB, name string, d time.Duration) {
	t.Helper()
	r, err := db.exec(ctx, "UPDATE caddy_locks SET expires = expires - $2 WHERE name = $1", name, int64(d))
	must(t, err)
	if n, _ := r.RowsAffected(); n != 1 {
		t.Fatalf("no lock %q to age", name)
	}
}

// lockExpiry is how far the stored expiry of a lock lies ahead of the
// database's clock.
func lockExpiry(t *testing.T, db *DB, name string) time.Duration {
	t.Helper()
	var left int64
	must(t, db.queryRow(ctx, "SELECT expires - $now FROM caddy_locks WHERE name = $1", name).Scan(&left))
	return time.Duration(left)
}

// TestLockExpiryIsTheDatabases: two brokers on one database whose
// clocks are 90s apart, more than a lock's TTL. The one running ahead
// must not take the other's live lock (it would, if each broker
// computed and compared expiries with its own clock), and the holder
// keeps refreshing it.
func TestLockExpiryIsTheDatabases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		behind := cfg
		behind.Now = time.Now
		ahead := cfg
		ahead.Now = func() time.Time { return time.Now().Add(90 * time.Second) }
		a, fast := open(t, behind), open(t, ahead)
		if ok, err := a.TryLock(ctx, "ca", "A", time.Minute); err != nil || !ok {
			t.Fatalf("A takes: %v %v", ok, err)
		}
		if ok, err := fast.TryLock(ctx, "ca", "B", time.Minute); err != nil || ok {
			t.Fatalf("the broker 90s ahead took A's live lock: %v %v", ok, err)
		}
		if ok, err := a.RefreshLock(ctx, "ca", "A", time.Minute); err != nil || !ok {
			t.Fatalf("A's refresh: %v %v", ok, err)
		}
		// The expiry is the database's now plus the TTL, whichever
		// broker's clock says what.
		if left := lockExpiry(t, a, "ca"); left <= 50*time.Second || left > time.Minute {
			t.Fatalf("A's lock expires %v after the database's now, want about 1m", left)
		}
		ageLock(t, a, "ca", time.Minute)
		if ok, err := fast.TryLock(ctx, "ca", "B", time.Minute); err != nil || !ok {
			t.Fatalf("B takes the expired lock: %v %v", ok, err)
		}
		if ok, err := a.RefreshLock(ctx, "ca", "A", time.Minute); err != nil || ok {
			t.Fatalf("A refreshes a lock B took: %v %v", ok, err)
		}
	})
}

func testMeta(t *testing.T, db *DB, clk *clock) {
	if _, ok, err := db.Meta(ctx, "imported_data_dir"); err != nil || ok {
		t.Fatalf("unset: %v %v", ok, err)
	}
	must(t, db.SetMeta(ctx, "imported_data_dir", "/a"))
	must(t, db.SetMeta(ctx, "imported_data_dir", "/b"))
	if v, ok, err := db.Meta(ctx, "imported_data_dir"); err != nil || !ok || v != "/b" {
		t.Fatalf("meta = %q %v %v", v, ok, err)
	}
}

func testMetaClaim(t *testing.T, db *DB, clk *clock) {
	if v, err := db.ClaimMeta(ctx, "claim", "/a"); err != nil || v != "/a" {
		t.Fatalf("first claim = %q %v", v, err)
	}
	if v, err := db.ClaimMeta(ctx, "claim", "/b"); err != nil || v != "/a" {
		t.Fatalf("second claim = %q %v, want the first writer's", v, err)
	}
	// Claims race on one key: every claimer learns the same winner.
	var wg sync.WaitGroup
	got := make([]string, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Go(func() { got[i], errs[i] = db.ClaimMeta(ctx, "race", fmt.Sprint(i)) })
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i] != got[0] {
			t.Fatalf("racing claims: %q %v", got, errs)
		}
	}
}

func testEmpty(t *testing.T, db *DB, clk *clock) {
	empty := func(want bool) {
		t.Helper()
		if got, err := db.Empty(ctx); err != nil || got != want {
			t.Fatalf("Empty = %v %v, want %v", got, err, want)
		}
	}
	empty(true)
	// Neither meta, storage nor locks count: only what an import would bring.
	must(t, db.SetMeta(ctx, "k", "v"))
	must(t, db.StoragePut(ctx, "k", []byte("v"), clk.Now()))
	empty(true)
	must(t, db.PutService(ctx, "s", []byte(`{}`)))
	empty(false)
	_, _ = db.DeleteService(ctx, "s")
	must(t, db.InsertSession(ctx, session("x", 1, clk.Now())))
	empty(false)
	_, _ = db.DeleteSessionsExpiredBefore(ctx, clk.Now().Add(24*time.Hour))
	empty(true)
	_, err := db.CreateBuiltinHeader(ctx, "default", []byte(`{}`))
	must(t, err)
	empty(false)
}

func testLocalFeed(t *testing.T, db *DB, clk *clock) {
	r := subscribe(t, db)
	must(t, db.PutService(ctx, "github", []byte(`{}`)))
	must(t, db.InsertSession(ctx, session("s1", 1, clk.Now())))
	_, err := db.RevokeSession(ctx, "s1", clk.Now())
	must(t, err)
	_, err = db.CreateBuiltinHeader(ctx, "default", []byte(`{}`))
	must(t, err)
	must(t, db.PutCredential(ctx, "default", cred("K", 1, clk.Now())))
	r.waitFor(t, time.Second,
		Change{TopicServices, "github"}, Change{TopicSessions, "s1"}, Change{TopicCredentials, "default"})
	r.reset()
	_, err = db.DeleteService(ctx, "github")
	must(t, err)
	_, err = db.DeleteSessionsExpiredBefore(ctx, clk.Now().Add(24*time.Hour))
	must(t, err)
	r.waitFor(t, time.Second, Change{TopicServices, "github"}, Change{TopicSessions, ""})

	// A failed write announces nothing; a cancelled subscriber hears
	// nothing more. The marker write shows the feed has moved past both.
	// The failed write is to a store nothing announced before: on
	// PostgreSQL this broker hears its own writes twice (at once, and
	// again through LISTEN), so a late echo of the writes above must
	// not be taken for the failed one's.
	r.reset()
	if err := db.PutCredential(ctx, "headless", cred("K", 1, clk.Now())); err == nil {
		t.Fatal("a credential stored for a store without a header")
	}
	if err := db.PutCredential(ctx, "default", cred("K", 1, clk.Now())); !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	gone := subscribe(t, db)
	cancelled := db.Subscribe(func(Change) { t.Error("cancelled subscriber called") })
	cancelled()
	cancelled()
	must(t, db.PutService(ctx, "marker", []byte(`{}`)))
	r.waitFor(t, time.Second, Change{TopicServices, "marker"})
	gone.waitFor(t, time.Second, Change{TopicServices, "marker"})
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.seen {
		if c == (Change{TopicCredentials, "headless"}) || c.Topic == TopicCredentials && !db.pg {
			t.Fatalf("the failed write was announced: %v", r.seen)
		}
	}
}

func testFeedSerial(t *testing.T, db *DB, clk *clock) {
	var mu sync.Mutex
	inside, overlaps := 0, 0
	var order []string
	cb := func(c Change) {
		mu.Lock()
		inside++
		if inside > 1 {
			overlaps++
		}
		if c.Topic == TopicServices {
			order = append(order, c.Key)
		}
		mu.Unlock()
		// A callback may use the database (and so cause more changes).
		_, _ = db.ListServices(ctx)
		mu.Lock()
		inside--
		mu.Unlock()
	}
	for range 3 {
		t.Cleanup(db.Subscribe(cb))
	}
	r := subscribe(t, db)
	var want []Change
	for i := range 20 {
		name := fmt.Sprintf("s%02d", i)
		must(t, db.PutService(ctx, name, []byte(`{}`)))
		want = append(want, Change{TopicServices, name})
	}
	r.waitFor(t, 5*time.Second, want...)
	mu.Lock()
	defer mu.Unlock()
	if overlaps != 0 {
		t.Fatalf("%d callbacks ran concurrently", overlaps)
	}
	// Each of the 3 subscribers saw the writes in commit order (this
	// instance's own announcements come first; PostgreSQL's echo of
	// them comes later and may repeat some).
	seen := map[string]int{}
	var first []string
	for _, k := range order {
		if seen[k] < 3 {
			first = append(first, k)
		}
		seen[k]++
	}
	for i := 0; i < 20; i++ {
		for j := 0; j < 3; j++ {
			if first[3*i+j] != fmt.Sprintf("s%02d", i) {
				t.Fatalf("delivery order %v", first)
			}
		}
	}
}

func testConcurrentWrites(t *testing.T, db *DB, clk *clock) {
	// Many API writers at once: with SQLite's one connection none meets
	// SQLITE_BUSY; on PostgreSQL they run in parallel.
	var wg sync.WaitGroup
	errs := make(chan error, 8*10*4)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				id := fmt.Sprintf("g%d-%d", g, i)
				errs <- db.PutService(ctx, id, []byte(`{}`))
				errs <- db.InsertSession(ctx, session(id, byte(g*10+i), clk.Now()))
				errs <- db.AddSessionActivity(ctx, []SessionActivity{{ID: id, Requests: 1, LastUsed: clk.Now()}})
				_, err := db.ListSessions(ctx, time.Time{})
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := db.ListServices(ctx); len(list) != 80 {
		t.Fatalf("%d services, want 80", len(list))
	}
}
