package statestorage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddypki"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// brokerDSN gives one database a distinct DSN per broker, so that two
// brokers of one test process do not share the module's per-DSN
// connection pool and really are two clients of the database.
func brokerDSN(dsn, broker string) string { return dsn + "&application_name=" + broker }

// newCaddyContext is a Caddy context outside a running config, as the
// PKI app's CA is given one; cancelling it cleans up the modules
// loaded into it, as a config unload does.
func newCaddyContext(t *testing.T) caddy.Context {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

// provision loads the storage module the way Caddy does and returns
// its certmagic.Storage.
func provision(t *testing.T, dsn, password string) (certmagic.Storage, error) {
	t.Helper()
	m := &Module{DSN: dsn, MasterPassword: password}
	if err := m.Provision(newCaddyContext(t)); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := m.Cleanup(); err != nil {
			t.Error(err)
		}
	})
	return m.CertMagicStorage()
}

func mustProvision(t *testing.T, dsn, password string) *Storage {
	t.Helper()
	s, err := provision(t, dsn, password)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*Storage)
}

// openState opens the state database directly, as one broker.
func openState(t *testing.T, dsn string) *state.DB {
	t.Helper()
	db, err := state.Open(context.Background(), state.Config{Backend: "postgres", DSN: dsn, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestContractPostgres(t *testing.T) {
	srv := pgtest.Shared(t)
	testContract(t, func(t *testing.T) storageUnderTest {
		db := openState(t, srv.NewDatabase(t))
		c := newClock()
		return storageUnderTest{s: New(db, newGCMSealer(), Options{Now: c.Now}), backend: db, clock: c}
	})
}

// caJSON is a PKI app CA whose storage is this module.
func caJSON(t *testing.T, dsn, password string) *caddypki.CA {
	raw, err := json.Marshal(map[string]string{"module": "agent_vault_state", "dsn": dsn, "master_password": password})
	if err != nil {
		t.Fatal(err)
	}
	return &caddypki.CA{StorageRaw: raw}
}

// TestBrokersShareOneCA provisions the PKI app's CA on two brokers of
// one empty database at the same moment, then on a third one later:
// all three sign under the same root and intermediate, and the CA keys
// are sealed in the database.
func TestBrokersShareOneCA(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	cas := []*caddypki.CA{caJSON(t, brokerDSN(dsn, "a"), "pw"), caJSON(t, brokerDSN(dsn, "b"), "pw")}
	var wg sync.WaitGroup
	for _, ca := range cas {
		ctx := newCaddyContext(t)
		wg.Go(func() {
			if err := ca.Provision(ctx, "local", zap.NewNop()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	late := caJSON(t, brokerDSN(dsn, "c"), "pw")
	if err := late.Provision(newCaddyContext(t), "local", zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	cas = append(cas, late)
	for i, ca := range cas[1:] {
		if !bytes.Equal(ca.RootCertificate().Raw, cas[0].RootCertificate().Raw) {
			t.Fatalf("broker %d has another root", i+1)
		}
		if !bytes.Equal(ca.IntermediateCertificateChain()[0].Raw, cas[0].IntermediateCertificateChain()[0].Raw) {
			t.Fatalf("broker %d has another intermediate", i+1)
		}
	}
	db := openState(t, dsn)
	for _, k := range []string{"pki/authorities/local/root.key", "pki/authorities/local/intermediate.key"} {
		raw, _, ok, err := db.StorageGet(context.Background(), k)
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", k, ok, err)
		}
		if bytes.Contains(raw, []byte("PRIVATE KEY")) || bytes.Contains(raw, []byte("-----")) {
			t.Fatalf("%s is in clear in the database", k)
		}
	}
}

// TestCaddyRunsOnTheSharedCA runs Caddy itself with this module as its
// storage, after another broker made the CA: Caddy's PKI app comes up
// with that root, and stopping Caddy releases the database.
func TestCaddyRunsOnTheSharedCA(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	first := caJSON(t, brokerDSN(dsn, "first"), "pw")
	if err := first.Provision(newCaddyContext(t), "local", zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_AGENT_VAULT_DATABASE_URL", brokerDSN(dsn, "caddy"))
	t.Setenv("TEST_AGENT_VAULT_MASTER_PASSWORD", "pw")
	cfg := []byte(`{
		"admin": {"disabled": true},
		"storage": {"module": "agent_vault_state", "dsn": "{env.TEST_AGENT_VAULT_DATABASE_URL}", "master_password": "{env.TEST_AGENT_VAULT_MASTER_PASSWORD}"},
		"apps": {"pki": {"certificate_authorities": {"local": {"install_trust": false}}}}
	}`)
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = caddy.Stop()
		}
	})
	app, err := caddy.ActiveContext().App("pki")
	if err != nil {
		t.Fatal(err)
	}
	root := app.(*caddypki.PKI).CAs["local"].RootCertificate()
	if !bytes.Equal(root.Raw, first.RootCertificate().Raw) {
		t.Fatal("Caddy's PKI app made its own root instead of using the cluster's")
	}
	if refs, _ := openDatabases.References(brokerDSN(dsn, "caddy")); refs != 1 {
		t.Fatalf("%d references to the database while Caddy runs", refs)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if refs, _ := openDatabases.References(brokerDSN(dsn, "caddy")); refs != 0 {
		t.Fatalf("%d references to the database after Caddy stopped: Cleanup did not release it", refs)
	}
}

// countingBackend counts TryLock calls, so a test can see a waiting
// Lock poll without timing it.
type countingBackend struct {
	Backend
	tries atomic.Int64
}

func (c *countingBackend) TryLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	c.tries.Add(1)
	return c.Backend.TryLock(ctx, name, owner, ttl)
}

func TestLocksAcrossBrokers(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	sealer := newGCMSealer()
	opts := Options{PollMin: time.Millisecond, PollMax: 10 * time.Millisecond}
	dbB := &countingBackend{Backend: openState(t, brokerDSN(dsn, "b"))}
	a, b := New(openState(t, brokerDSN(dsn, "a")), sealer, opts), New(dbB, sealer, opts)
	ctx := context.Background()

	if err := a.Lock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_example.com"); ok || err != nil {
		t.Fatalf("B's TryLock of A's lock = %v, %v", ok, err)
	}
	got := lockInBackground(ctx, b, "issue_cert_example.com")
	seen := dbB.tries.Load()
	waitFor(t, "B to poll", func() bool { return dbB.tries.Load() >= seen+3 })
	select {
	case err := <-got:
		t.Fatalf("B's Lock returned (%v) while A held the lock", err)
	default:
	}
	if err := a.Unlock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	if err := receive(t, "B's Lock after A's Unlock", got); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}

	// A broker that died holding a lock: B takes it once it expires.
	raw := openState(t, brokerDSN(dsn, "crashed"))
	if ok, err := raw.TryLock(ctx, "pki", "crashed-broker", 300*time.Millisecond); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if ok, err := b.TryLock(ctx, "pki"); ok || err != nil {
		t.Fatalf("TryLock of a live lock = %v, %v", ok, err)
	}
	if err := receive(t, "B's Lock of the dead broker's lock", lockInBackground(ctx, b, "pki")); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}

	// Goroutines of both brokers through one critical section.
	var inside atomic.Int32
	var wg sync.WaitGroup
	for _, s := range []*Storage{a, b, a, b} {
		wg.Go(func() {
			for range 5 {
				if err := s.Lock(ctx, "critical"); err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					t.Error("two holders inside the critical section")
				}
				inside.Add(-1)
				if err := s.Unlock(ctx, "critical"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestLockWithSkewedClocks: broker B's clock runs 90s ahead of A's,
// more than the lock TTL. B must not take the pair lock A holds: both
// brokers' expiries are the database's.
func TestLockWithSkewedClocks(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	ahead := func() time.Time { return time.Now().Add(90 * time.Second) }
	dbB, err := state.Open(context.Background(), state.Config{Backend: "postgres", DSN: brokerDSN(dsn, "b"), Now: ahead})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dbB.Close() })
	sealer := newGCMSealer()
	a := New(openState(t, brokerDSN(dsn, "a")), sealer, Options{})
	b := New(dbB, sealer, Options{Now: ahead})
	ctx := context.Background()
	const lock = "agent_vault_state/ca_pair/local/root"
	if err := a.Lock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, lock); ok || err != nil {
		t.Fatalf("the broker 90s ahead took the live lock: %v, %v", ok, err)
	}
	if err := a.Unlock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, lock); !ok || err != nil {
		t.Fatalf("TryLock after Unlock = %v, %v", ok, err)
	}
	if err := b.Unlock(ctx, lock); err != nil {
		t.Fatal(err)
	}
}

func TestBrokersStartingTogetherOnPostgres(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	storages := make([]*Storage, 3)
	var wg sync.WaitGroup
	for i := range storages {
		m := &Module{DSN: brokerDSN(dsn, fmt.Sprint("b", i)), MasterPassword: "same"}
		if err := m.Provision(newCaddyContext(t)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Cleanup() })
		wg.Go(func() {
			s, err := m.CertMagicStorage()
			if err != nil {
				t.Error(err)
				return
			}
			storages[i] = s.(*Storage)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	mustStore(t, storages[0], "shared", "sealed by broker 0")
	for i, s := range storages[1:] {
		if v := mustLoad(t, s, "shared"); v != "sealed by broker 0" {
			t.Fatalf("broker %d reads %q", i+1, v)
		}
	}
}

func TestWrongMasterPasswordRefusedAtStart(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	a := mustProvision(t, brokerDSN(dsn, "a"), "the right password")
	mustStore(t, a, "k", "v")
	_, err := provision(t, brokerDSN(dsn, "b"), "a wrong password")
	if !errors.Is(err, errWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	for _, secret := range []string{"a wrong password", "the right password", srv.Password()} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("the error shows a secret: %v", err)
		}
	}
	b := mustProvision(t, brokerDSN(dsn, "c"), "the right password")
	if v := mustLoad(t, b, "k"); v != "v" {
		t.Fatal(v)
	}
}

func TestReloadSharesTheDatabase(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	m1 := &Module{DSN: dsn, MasterPassword: "pw"}
	m2 := &Module{DSN: dsn, MasterPassword: "pw"}
	var got []certmagic.Storage
	for _, m := range []*Module{m1, m2} {
		if err := m.Provision(newCaddyContext(t)); err != nil {
			t.Fatal(err)
		}
		s, err := m.CertMagicStorage()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if got[0] != got[1] {
		t.Error("a reload with the same DSN and password made a second storage")
	}
	if refs, _ := openDatabases.References(dsn); refs != 2 {
		t.Errorf("%d references, want 2", refs)
	}
	// A reload with another (wrong) password is refused; the running
	// config keeps its storage.
	m3 := &Module{DSN: dsn, MasterPassword: "other"}
	if err := m3.Provision(newCaddyContext(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := m3.CertMagicStorage(); !errors.Is(err, errWrongPassword) {
		t.Errorf("reload with another password: %v", err)
	}
	for _, m := range []*Module{m1, m2, m3} {
		if err := m.Cleanup(); err != nil {
			t.Fatal(err)
		}
	}
	if refs, _ := openDatabases.References(dsn); refs != 0 {
		t.Errorf("%d references after every config let go", refs)
	}
}

func TestStartUpErrors(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from the file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_AGENT_VAULT_EMPTY", "")
	for name, tc := range map[string]struct {
		m    Module
		want string
	}{
		"no dsn":             {Module{MasterPassword: "pw"}, "dsn is required"},
		"dsn from empty env": {Module{DSN: "{env.TEST_AGENT_VAULT_EMPTY}", MasterPassword: "pw"}, "dsn is required"},
		"no password":        {Module{DSN: "postgres://u@127.0.0.1:1/db"}, "needs the master password"},
		"unreadable file":    {Module{DSN: "postgres://u@127.0.0.1:1/db", MasterPasswordFile: filepath.Join(dir, "missing")}, "reading master_password_file"},
	} {
		err := tc.m.Provision(newCaddyContext(t))
		if err == nil || !strings.HasPrefix(err.Error(), "agent_vault_state storage: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	m := Module{DSN: "postgres://u@127.0.0.1:1/db", MasterPassword: "ignored", MasterPasswordFile: pwFile}
	if err := m.Provision(newCaddyContext(t)); err != nil || string(m.password) != "from the file" {
		t.Fatalf("password file: %q, %v", m.password, err)
	}

	// An unreachable database stops the start with a message that
	// names the storage and not the database password.
	bad := Module{DSN: "postgres://u:db-secret-pw@127.0.0.1:1/db?sslmode=disable&connect_timeout=2", MasterPassword: "pw"}
	if err := bad.Provision(newCaddyContext(t)); err != nil {
		t.Fatal(err)
	}
	_, err := bad.CertMagicStorage()
	if err == nil || !strings.HasPrefix(err.Error(), "agent_vault_state storage: ") || strings.Contains(err.Error(), "db-secret-pw") {
		t.Fatalf("unreachable database: %v", err)
	}
	if err := bad.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

// TestCleanupStopsTheStoragesBackgroundWork: when the last config lets
// go of the shared database, the storage's lock keep-alives and CA pair
// timers stop and its locks are released before the database closes,
// and no goroutine of it is left behind.
func TestCleanupStopsTheStoragesBackgroundWork(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	other := openState(t, brokerDSN(dsn, "other"))
	before := runtime.NumGoroutine()

	m := &Module{DSN: brokerDSN(dsn, "cleanup"), MasterPassword: "pw"}
	if err := m.Provision(newCaddyContext(t)); err != nil {
		t.Fatal(err)
	}
	cs, err := m.CertMagicStorage()
	if err != nil {
		t.Fatal(err)
	}
	s := cs.(*Storage)
	ctx := context.Background()
	if err := s.Lock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	mustStore(t, s, "pki/authorities/local/intermediate.crt", "half a renewal") // opens a pair unit
	s.mu.Lock()
	var keepAlives []*heldLock
	for _, h := range s.held {
		keepAlives = append(keepAlives, h)
	}
	s.mu.Unlock()
	if len(keepAlives) != 2 {
		t.Fatalf("%d locks held, want 2", len(keepAlives))
	}

	if err := m.Cleanup(); err != nil {
		t.Fatal(err)
	}
	for _, h := range keepAlives {
		select {
		case <-h.done:
		default:
			t.Fatal("a lock keep-alive still runs after Cleanup")
		}
	}
	s.mu.Lock()
	leases, held := len(s.leases), len(s.held)
	s.mu.Unlock()
	if leases != 0 || held != 0 {
		t.Fatalf("after Cleanup: %d pair leases, %d locks", leases, held)
	}
	for _, name := range []string{"issue_cert_example.com", "agent_vault_state/ca_pair/local/intermediate"} {
		if ok, err := other.TryLock(ctx, name, "other", time.Minute); !ok || err != nil {
			t.Errorf("%s is still locked after Cleanup: %v %v", name, ok, err)
		}
	}
	if _, err := s.TryLock(ctx, "late"); err == nil {
		t.Error("a lock was taken through a closed storage")
	}
	waitFor(t, "the storage's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
