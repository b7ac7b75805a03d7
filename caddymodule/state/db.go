package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrConflict means a write lost a race or would duplicate a key: a
// built-in store record's version is not the stored one plus one; a row
// with the new session's, agent's, operator's, login's, access
// request's or audit entry's key (id, name or token hash) exists
// already; an access request was decided already; a login's operator
// changed its password or went away. Re-read and retry.
var ErrConflict = errors.New("conflict: the stored row changed or already exists")

// ErrNotLeased means RenewSessionLease found the session but it has no
// lease: it keeps its TTL and there is nothing to renew.
var ErrNotLeased = errors.New("the session has no lease")

// ErrEnded means RenewSessionLease found the session but it has ended:
// revoked, expired, or its lease lapsed before the renewal arrived. A
// lapsed lease is not revived: the session is over on every broker.
var ErrEnded = errors.New("the session has ended")

// ErrNotEmpty means ImportBuiltin found the store already has a header
// or records: something imported or created it first.
var ErrNotEmpty = errors.New("the built-in store already has data")

// openTimeout bounds connecting, pinging and migrating in Open when the
// caller's context has no earlier deadline, so a blackholed database
// fails the start instead of hanging it.
const openTimeout = 15 * time.Second

// DB is the state database. Its methods are safe for concurrent use.
type DB struct {
	s       *settings
	backend string
	pg      bool
	dialect dialect
	sql     *sql.DB

	feed   *feed
	health health

	// activityDeleteChunk overrides defaultActivityDeleteChunk (tests).
	activityDeleteChunk int

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open validates cfg (no I/O for a bad one), opens the database, checks
// that it answers and brings its schema up to date. It refuses a
// database whose schema is newer than this binary's. The returned DB's
// background work (pinger, change feed, LISTEN on PostgreSQL) runs until
// Close.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	db := &DB{s: s, backend: cfg.Backend, pg: cfg.Backend == BackendPostgres, dialect: sqliteDialect}
	if db.pg {
		db.dialect = postgresDialect
	}
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	if db.pg {
		// Every pooled connection is pinged before reuse (the driver's
		// default skips connections idle for less than a second): after
		// a server restart or failover an idle connection holds only the
		// server's farewell, and the query sent on it would fail. A
		// failed ping makes database/sql take another connection. The
		// round trip is cheap next to how rarely the broker queries:
		// its hot path is in memory.
		db.sql = stdlib.OpenDB(*s.pg.Copy(), stdlib.OptionShouldPing(func(context.Context, stdlib.ShouldPingParams) bool { return true }))
		// A few connections: the API's writes, the flusher and the feed's
		// reloads.
		db.sql.SetMaxOpenConns(8)
		db.sql.SetMaxIdleConns(4)
		db.sql.SetConnMaxIdleTime(5 * time.Minute)
	} else {
		if db.sql, err = openSQLite(s.path); err != nil {
			return nil, db.wrap("open", err)
		}
	}
	fail := func(op string, err error) (*DB, error) {
		_ = db.sql.Close()
		return nil, db.wrap(op, err)
	}
	if err := db.sql.PingContext(ctx); err != nil {
		return fail("connect", err)
	}
	if !db.pg {
		if err := db.walMode(ctx); err != nil {
			return fail("connect", err)
		}
	}
	if err := db.migrate(ctx); err != nil {
		var newer *newerSchemaError
		if errors.As(err, &newer) {
			_ = db.sql.Close()
			return nil, fmt.Errorf("state %s: %w", db.backend, err)
		}
		return fail("migrate", err)
	}
	db.health.contact(s.Now())
	db.health.answering = make(chan struct{}, 1)
	db.feed = newFeed(s.Logger)
	var listener *pgx.Conn
	if db.pg {
		// The first LISTEN connection is made here, before Open returns:
		// a caller that loads its state after Open then misses nothing.
		if listener, err = db.listenConn(ctx); err != nil {
			return fail("listen", err)
		}
	}
	bg, stop := context.WithCancel(context.Background())
	db.cancel = stop
	db.start(func() { db.feed.run(bg) })
	db.start(func() { db.reloadLoop(bg) })
	db.start(func() { db.pingLoop(bg) })
	if db.pg {
		db.start(func() { db.listenLoop(bg, listener) })
	}
	return db, nil
}

func (db *DB) start(f func()) {
	db.wg.Add(1)
	go func() {
		defer db.wg.Done()
		f()
	}()
}

// Close stops the background work and closes the database. Subscribers
// get nothing more.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.health.closed.Store(true)
		db.cancel()
		db.wg.Wait()
		if err := db.sql.Close(); err != nil {
			db.closeErr = db.wrap("close", err)
		}
	})
	return db.closeErr
}

// Backend returns BackendSQLite or BackendPostgres.
func (db *DB) Backend() string { return db.backend }

// wrap names the backend and the operation and removes anything that
// may be the DSN's password (a driver error can quote connection
// settings). It keeps err in the chain for errors.Is (ErrConflict).
func (db *DB) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &opError{backend: db.backend, op: op, err: err, secrets: db.s.secrets}
}

type opError struct {
	backend, op string
	err         error
	secrets     []string
}

func (e *opError) Error() string {
	return scrub(fmt.Sprintf("state %s: %s: %v", e.backend, e.op, e.err), e.secrets)
}

func (e *opError) Unwrap() error { return e.err }

// openSQLite opens the database file, creating it 0600 in a 0700
// directory when missing: it holds session token hashes and sealed
// credentials. An existing file, and its -wal and -shm files if there
// are any, is made 0600 too: one left readable by others (copied in,
// made by an older build or by hand) would stay readable otherwise.
// SQLite gives the -wal and -shm files it creates the database file's
// mode.
//
// One connection serves everything: SQLite allows one writer at a time
// and a second connection in this process would meet SQLITE_BUSY (or a
// deadlocked upgrade from reader to writer); database/sql queues callers
// for the one connection instead. busy_timeout covers other processes
// (an operator's sqlite3 shell), _txlock=immediate takes the write lock
// when a transaction begins so it never has to upgrade.
func openSQLite(path string) (*sql.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(f.Chmod(0o600), f.Close()); err != nil {
		return nil, err
	}
	for _, side := range []string{path + "-wal", path + "-shm"} {
		if err := os.Chmod(side, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	// A file: URI so that '?' or '#' in the path are escaped, not
	// mistaken for the parameters.
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

// walMode puts the database file in WAL mode (readers and the writer do
// not block each other, and a commit is one append), which the file
// then keeps for every later connection.
//
// It is done here, once, rather than as a pragma of every connection:
// when several handles open a brand-new file at the same moment (two
// brokers, or an old and a new app instance), all but one of the
// conversions to WAL fail with SQLITE_BUSY at once, without waiting
// for busy_timeout (SQLite's deadlock avoidance). So a BUSY is retried
// here until the conversion is done or ctx ends.
func (db *DB) walMode(ctx context.Context) error {
	wait := time.Millisecond
	for {
		var mode string
		err := db.sql.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		switch {
		case err == nil && strings.EqualFold(mode, "wal"):
			return nil
		case err == nil:
			return fmt.Errorf("the database stays in journal mode %q, not WAL", mode)
		case !isBusy(err):
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("setting WAL mode: %w (gave up: %w)", err, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// isUniqueViolation reports a write refused because a row with the same
// unique key exists (PostgreSQL's unique_violation, SQLite's UNIQUE or
// PRIMARY KEY constraint): the statement lost to another writer, which
// callers learn as ErrConflict.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// isBusy reports SQLITE_BUSY, or one of its extended codes.
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// q adapts a query written with $N placeholders and $now to the
// backend (see dialect).
func (db *DB) q(query string) string { return db.dialect.sql(query) }

func (db *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.sql.ExecContext(ctx, db.q(query), args...)
}

func (db *DB) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.sql.QueryContext(ctx, db.q(query), args...)
}

func (db *DB) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return db.sql.QueryRowContext(ctx, db.q(query), args...)
}

// txn is a write transaction that collects the changes it makes.
type txn struct {
	db      *DB
	tx      *sql.Tx
	changes []Change
}

func (t *txn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.db.q(query), args...)
}

func (t *txn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.db.q(query), args...)
}

func (t *txn) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.db.q(query), args...)
}

// publish records a change to announce once the transaction commits.
func (t *txn) publish(c Change) { t.changes = append(t.changes, c) }

// execAnnounced runs a statement and, when it changed a row, announces
// c: a delete or revoke of nothing announces nothing.
func (t *txn) execAnnounced(ctx context.Context, c Change, query string, args ...any) (bool, error) {
	r, err := t.exec(ctx, query, args...)
	if err != nil {
		return false, err
	}
	n, err := affected(r)
	if err != nil || n == 0 {
		return false, err
	}
	t.publish(c)
	return true, nil
}

// write runs fn in a transaction and announces the changes it
// published: on PostgreSQL with pg_notify inside the transaction (so
// other instances hear of it exactly when it commits), and to this
// process's subscribers after the commit. fn's error (ErrConflict, say)
// rolls back and is returned wrapped with op.
func (db *DB) write(ctx context.Context, op string, fn func(*txn) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return db.wrap(op, err)
	}
	t := &txn{db: db, tx: tx}
	if err := fn(t); err != nil {
		_ = tx.Rollback()
		return db.wrap(op, err)
	}
	if db.pg {
		for _, c := range t.changes {
			if _, err := tx.ExecContext(ctx, "SELECT pg_notify($1, $2)", notifyChannel, c.payload()); err != nil {
				_ = tx.Rollback()
				return db.wrap(op, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return db.wrap(op, err)
	}
	db.feed.publish(t.changes...)
	return nil
}

// affected returns a statement's row count.
func affected(r sql.Result) (int64, error) {
	return r.RowsAffected()
}

// Times are stored as BIGINT unix nanoseconds, which both backends
// compare and order natively. An int64 of nanoseconds spans 1677-09-21
// to 2262-04-11; time.UnixNano wraps silently outside it (a session
// expiring in 2300 would read back as expired in 1715, a lock expiring
// far ahead as long expired). So:
//
//   - a time that is written (storedNanos) must lie inside the range,
//     and must not be the zero time, which is outside it and almost
//     always a caller's mistake (an unset CreatedAt, say): both are
//     refused with an error rather than stored wrong;
//   - a time that only bounds a query (boundNanos) is clamped to the
//     range, which compares exactly as the time itself would: every
//     stored time lies inside.
var (
	minStored = time.Unix(0, math.MinInt64)
	maxStored = time.Unix(0, math.MaxInt64)
)

// storedNanos is the stored form of a time written to column.
func storedNanos(column string, t time.Time) (int64, error) {
	switch {
	case t.IsZero():
		return 0, fmt.Errorf("%s: the zero time is not a storable time", column)
	case t.Before(minStored) || t.After(maxStored):
		return 0, fmt.Errorf("%s: %s is outside the storable range (%s to %s)", column,
			t.UTC().Format(time.RFC3339), minStored.UTC().Format(time.RFC3339), maxStored.UTC().Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

// boundNanos is the stored form of a time a query compares with.
func boundNanos(t time.Time) int64 {
	switch {
	case t.Before(minStored):
		return math.MinInt64
	case t.After(maxStored):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// storedNullNanos is storedNanos for a nullable column: nil is NULL.
func storedNullNanos(column string, t *time.Time) (sql.NullInt64, error) {
	if t == nil {
		return sql.NullInt64{}, nil
	}
	n, err := storedNanos(column, *t)
	return sql.NullInt64{Int64: n, Valid: err == nil}, err
}

func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}
