package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

func TestEmbeddedMigrationsAreNumberedWell(t *testing.T) {
	migs, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migs {
		if m.version != i+1 || m.sql == "" {
			t.Fatalf("migration %d: %+v", i, m)
		}
	}
}

func TestLoadMigrationsRefusesBadSets(t *testing.T) {
	file := func(names ...string) fstest.MapFS {
		fs := fstest.MapFS{}
		for _, n := range names {
			fs["migrations/"+n] = &fstest.MapFile{Data: []byte("CREATE TABLE x (y TEXT);")}
		}
		return fs
	}
	for _, tc := range []struct {
		fs   fstest.MapFS
		want string
	}{
		{file("0001_a.sql", "0001_b.sql"), "have the same number"},
		{file("0001_a.sql", "0003_c.sql"), "expected number 0002"},
		{file("0002_b.sql"), "expected number 0001"},
		{file("0001_a.sql", "1_b.sql"), "must be NNNN_name.sql"},
		{file("0001_a.sql", "0002-b.sql"), "must be NNNN_name.sql"},
		{file("0001_Init.sql"), "must be NNNN_name.sql"},
		{file("0001_a.sql", "README.md"), "must be NNNN_name.sql"},
		{file("0001_a.sql", "00002_b.sql"), "must be NNNN_name.sql"},
		{fstest.MapFS{"migrations/.keep": {}}, "must be NNNN_name.sql"},
		{fstest.MapFS{"other/0001_a.sql": {}}, "migrations"},
	} {
		if _, err := loadMigrations(tc.fs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", keys(tc.fs), err, tc.want)
		}
	}
	if migs, err := loadMigrations(file("0002_b.sql", "0001_a.sql", "0003_c_d9.sql")); err != nil || len(migs) != 3 || migs[2].name != "c_d9" {
		t.Fatalf("good set: %+v %v", migs, err)
	}
}

func keys(fs fstest.MapFS) []string {
	var out []string
	for k := range fs {
		out = append(out, k)
	}
	return out
}

// appliedMigrations reads the schema table.
func appliedMigrations(t *testing.T, db *DB) []int {
	t.Helper()
	rows, err := db.query(context.Background(), "SELECT version FROM "+schemaTable+" ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func latestMigration(t *testing.T) int {
	migs, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	return migs[len(migs)-1].version
}

func TestMigrationsApplyOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		db := open(t, cfg)
		if got := appliedMigrations(t, db); len(got) != latestMigration(t) {
			t.Fatalf("applied %v", got)
		}
		must(t, db.PutService(ctx, "kept", []byte(`{}`)))
		must(t, db.Close())
		db = open(t, cfg) // opening again changes nothing
		if got := appliedMigrations(t, db); len(got) != latestMigration(t) {
			t.Fatalf("applied after reopening %v", got)
		}
		if list, _ := db.ListServices(ctx); len(list) != 1 {
			t.Fatalf("services after reopening: %v", list)
		}
	})
}

// TestAnotherToolsSchemaMigrationsIsNotOurs: a database shared with
// software whose migration tool keeps a schema_migrations table (here
// golang-migrate's layout, at a date-stamped version) opens as a new
// agent-vault database, and the other table is left as it was.
func TestAnotherToolsSchemaMigrationsIsNotOurs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		driver, dsn := "pgx", cfg.DSN
		if b.name == BackendSQLite {
			must(t, os.MkdirAll(filepath.Dir(cfg.DSN), 0o700))
			driver = "sqlite"
		}
		raw, err := sql.Open(driver, dsn)
		must(t, err)
		defer raw.Close()
		_, err = raw.Exec("CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, dirty BOOLEAN NOT NULL)")
		must(t, err)
		_, err = raw.Exec("INSERT INTO schema_migrations (version, dirty) VALUES (20240101120000, false)")
		must(t, err)
		db := open(t, cfg)
		if got := appliedMigrations(t, db); len(got) != latestMigration(t) {
			t.Fatalf("applied %v", got)
		}
		must(t, db.PutService(ctx, "s", []byte(`{}`)))
		var n int
		var v int64
		must(t, raw.QueryRow("SELECT count(*), max(version) FROM schema_migrations").Scan(&n, &v))
		if n != 1 || v != 20240101120000 {
			t.Fatalf("the other tool's table changed: %d rows, version %d", n, v)
		}
	})
}

func TestNewerSchemaIsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		db := open(t, cfg)
		newer := latestMigration(t) + 6
		if _, err := db.exec(ctx, "INSERT INTO "+schemaTable+" (version, name, applied_at) VALUES ($1, 'future', 'x')", newer); err != nil {
			t.Fatal(err)
		}
		must(t, db.Close())
		_, err := Open(context.Background(), cfg)
		want := fmt.Sprintf("state %s: the database schema is version %d, newer than this binary's %d: upgrade agent-vault", b.name, newer, latestMigration(t))
		if err == nil || err.Error() != want {
			t.Fatalf("Open = %v, want %q", err, want)
		}
	})
}

func TestOpensRaceOnAFreshDatabase(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		const n = 6
		dbs := make([]*DB, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dbs[i], errs[i] = Open(context.Background(), cfg)
			}()
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Open %d: %v", i, errs[i])
			}
			t.Cleanup(func() { _ = dbs[i].Close() })
		}
		if got := appliedMigrations(t, dbs[0]); len(got) != latestMigration(t) {
			t.Fatalf("applied %v", got)
		}
	})
}

// TestMigrationKeepsSessions: a database left at version 1 by an older
// broker, with sessions in it, opens at the newest version with its
// sessions as they were and without leases (lease_timeout 0,
// lease_until NULL): they keep their TTL semantics. The identity tables
// are there and empty.
func TestMigrationKeepsSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cfg := b.config(t)
		driver := "pgx"
		if b.name == BackendSQLite {
			must(t, os.MkdirAll(filepath.Dir(cfg.DSN), 0o700))
			driver = "sqlite"
		}
		raw, err := sql.Open(driver, cfg.DSN)
		must(t, err)
		defer raw.Close()
		migs, err := loadMigrations(migrationFiles)
		must(t, err)
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := raw.Exec(rebindFor(b.name, q), args...); err != nil {
				t.Fatalf("%.60s: %v", q, err)
			}
		}
		exec(`CREATE TABLE ` + schemaTable + ` (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`)
		exec(migs[0].sql)
		exec("INSERT INTO "+schemaTable+" (version, name, applied_at) VALUES ($1, $2, 'by an older broker')", migs[0].version, migs[0].name)
		clk := newClock()
		s := session("old", 1, clk.Now())
		revoked := session("old-revoked", 2, clk.Now())
		at := clk.Now().Add(time.Minute)
		revoked.RevokedAt = &at
		for _, r := range []SessionRow{s, revoked} {
			var rev sql.NullInt64
			if r.RevokedAt != nil {
				rev = sql.NullInt64{Int64: r.RevokedAt.UnixNano(), Valid: true}
			}
			// The 0001 columns only.
			exec(`INSERT INTO sessions (id, token_hash, services, placeholders, agent, created_at, expires_at, revoked_at, requests)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)`, r.ID, fmt.Sprintf("%x", r.TokenHash), `["github","anthropic"]`,
				`{"GITHUB_TOKEN":"agvph_1","ANTHROPIC_KEY":"agvph_2"}`, r.Agent, r.CreatedAt.UnixNano(), r.ExpiresAt.UnixNano(), rev)
		}

		db := open(t, cfg)
		if got := appliedMigrations(t, db); len(got) != latestMigration(t) || got[0] != 1 {
			t.Fatalf("applied %v", got)
		}
		renewal := map[string]error{"old": ErrNotLeased, "old-revoked": ErrEnded}
		for _, want := range []SessionRow{s, revoked} {
			got, ok, err := db.Session(ctx, want.ID)
			if err != nil || !ok || !reflect.DeepEqual(got, want) {
				t.Fatalf("session %s after the migration: %+v %v %v, want %+v", want.ID, got, ok, err, want)
			}
			if got.LeaseTimeout != 0 || got.LeaseUntil != nil {
				t.Fatalf("session %s gained a lease: %+v", want.ID, got)
			}
			if found, err := db.RenewSessionLease(ctx, want.ID, clk.Now().Add(time.Minute)); !found || !errors.Is(err, renewal[want.ID]) {
				t.Fatalf("renewing the migrated session %s: %v %v, want %v", want.ID, found, err, renewal[want.ID])
			}
		}
		var timeout int64
		var until sql.NullInt64
		must(t, db.queryRow(ctx, "SELECT lease_timeout, lease_until FROM sessions WHERE id = 'old'").Scan(&timeout, &until))
		if timeout != 0 || until.Valid {
			t.Fatalf("stored lease_timeout %d, lease_until %v; want 0 and NULL", timeout, until)
		}
		if list, err := db.ListAgents(ctx); err != nil || len(list) != 0 {
			t.Fatalf("agents after the migration: %v %v", list, err)
		}
		if list, err := db.ListAudit(ctx, AuditFilter{}); err != nil || len(list) != 0 {
			t.Fatalf("audit after the migration: %v %v", list, err)
		}
	})
}

// rebindFor writes a $N query for a raw connection of the backend.
func rebindFor(backend, q string) string {
	if backend == BackendSQLite {
		return rebind(q)
	}
	return q
}
