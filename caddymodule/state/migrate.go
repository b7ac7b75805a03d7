package state

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// migrationFiles are the schema's steps, applied in order and never
// edited once released: a change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered step of the schema.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)

// loadMigrations reads NNNN_name.sql files from fsys's migrations
// directory and checks that they count up from 0001 without a gap or a
// duplicate: a misnumbered file would otherwise be skipped on databases
// that are already past its number, silently.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			return nil, fmt.Errorf("migration %q: the name must be NNNN_name.sql (lower case, digits, _)", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: m[2], sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if i > 0 && m.version == out[i-1].version {
			return nil, fmt.Errorf("migrations %04d_%s and %04d_%s have the same number", m.version, m.name, m.version, out[i-1].name)
		}
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: expected number %04d (they count up from 0001 without gaps)", m.version, m.name, i+1)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no migrations")
	}
	return out, nil
}

// schemaTable records the migrations applied. Its name is our own: a
// PostgreSQL database may be shared with other software, and the common
// name schema_migrations (golang-migrate's, Rails') would have its
// versions read as ours, refusing the database as "newer than this
// binary" or skipping our migrations.
const schemaTable = "agent_vault_schema"

// migrationLockKey is the pg_advisory_xact_lock key under which brokers
// migrate one database; the advisory lock space is per database.
const migrationLockKey int64 = 0x61765f7374617465 // "av_state"

// newerSchemaError is a database migrated by a newer binary: running on
// it could misread or damage what the newer schema added.
type newerSchemaError struct{ db, binary int }

func (e *newerSchemaError) Error() string {
	return fmt.Sprintf("the database schema is version %d, newer than this binary's %d: upgrade agent-vault", e.db, e.binary)
}

// migrate applies the pending migrations in one transaction: all of
// them or none. On PostgreSQL the transaction first takes an advisory
// lock, so brokers starting together on a fresh database apply each
// step once, one after the other; SQLite's immediate transaction is
// itself exclusive.
func (db *DB) migrate(ctx context.Context) error {
	migs, err := loadMigrations(migrationFiles)
	if err != nil {
		return err
	}
	latest := migs[len(migs)-1].version
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if db.pg {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+schemaTable+` (
    version    INTEGER NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)`); err != nil {
		return err
	}
	var current sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT MAX(version) FROM "+schemaTable).Scan(&current); err != nil {
		return err
	}
	if int(current.Int64) > latest {
		return &newerSchemaError{db: int(current.Int64), binary: latest}
	}
	applied := db.s.Now().UTC().Format(time.RFC3339Nano)
	for _, m := range migs[current.Int64:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("%04d_%s: %w", m.version, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO "+schemaTable+" (version, name, applied_at) VALUES ($1, $2, $3)"),
			m.version, m.name, applied); err != nil {
			return err
		}
	}
	return tx.Commit()
}
