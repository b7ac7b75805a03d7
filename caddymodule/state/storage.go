package state

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// StorageEntry describes one key of Caddy's storage.
type StorageEntry struct {
	Key      string
	Modified time.Time
	Size     int64
}

// Values are stored as unpadded base64, so that a listing can compute
// each size from length(value) without reading the value.
var storageEncoding = base64.RawStdEncoding

// StoragePut creates or replaces key's value (opaque bytes, sealed by
// the caller).
func (db *DB) StoragePut(ctx context.Context, key string, value []byte, modified time.Time) error {
	mod, err := storedNanos("modified", modified)
	if err != nil {
		return db.wrap("storage put", err)
	}
	_, err = db.exec(ctx, `INSERT INTO caddy_storage (key, value, modified) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, modified = excluded.modified`,
		key, storageEncoding.EncodeToString(value), mod)
	return db.wrap("storage put", err)
}

// StorageCreate puts value at key unless key has a value already, and
// reports whether it did: the first writer wins, atomically on both
// backends. It is for values that must never be replaced once made,
// such as a CA root another broker may be creating at the same moment.
func (db *DB) StorageCreate(ctx context.Context, key string, value []byte, modified time.Time) (bool, error) {
	mod, err := storedNanos("modified", modified)
	if err != nil {
		return false, db.wrap("storage create", err)
	}
	r, err := db.exec(ctx, "INSERT INTO caddy_storage (key, value, modified) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
		key, storageEncoding.EncodeToString(value), mod)
	if err != nil {
		return false, db.wrap("storage create", err)
	}
	n, err := affected(r)
	return n > 0, db.wrap("storage create", err)
}

// StorageGet returns key's value; ok is false when there is none.
func (db *DB) StorageGet(ctx context.Context, key string) (value []byte, modified time.Time, ok bool, err error) {
	var v string
	var m int64
	err = db.queryRow(ctx, "SELECT value, modified FROM caddy_storage WHERE key = $1", key).Scan(&v, &m)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, false, nil
	}
	if err != nil {
		return nil, time.Time{}, false, db.wrap("storage get", err)
	}
	if value, err = storageEncoding.DecodeString(v); err != nil {
		return nil, time.Time{}, false, db.wrap("storage get", err)
	}
	return value, fromNanos(m), true, nil
}

// underKey matches key itself and every key below it ("key/..."). It
// compares a prefix with substr rather than LIKE: SQLite's LIKE ignores
// case and both treat % and _ in keys as wildcards. substr counts
// characters on both backends, hence the rune count.
const underKey = "(key = $1 OR substr(key, 1, $2) = $3)"

func underArgs(key string) []any {
	p := key + "/"
	return []any{key, utf8.RuneCountInString(p), p}
}

// StorageDelete removes key and every key under key+"/", reporting
// whether anything was removed (Caddy's Delete removes directories).
func (db *DB) StorageDelete(ctx context.Context, key string) (bool, error) {
	r, err := db.exec(ctx, "DELETE FROM caddy_storage WHERE "+underKey, underArgs(key)...)
	if err != nil {
		return false, db.wrap("storage delete", err)
	}
	n, err := affected(r)
	return n > 0, db.wrap("storage delete", err)
}

// StorageList returns the keys equal to prefix or under prefix+"/"
// (every key for ""), sorted.
func (db *DB) StorageList(ctx context.Context, prefix string) ([]StorageEntry, error) {
	var rows *sql.Rows
	var err error
	const cols = "SELECT key, modified, length(value) FROM caddy_storage"
	if prefix == "" {
		rows, err = db.query(ctx, cols+" ORDER BY key")
	} else {
		rows, err = db.query(ctx, cols+" WHERE "+underKey+" ORDER BY key", underArgs(prefix)...)
	}
	if err != nil {
		return nil, db.wrap("storage list", err)
	}
	defer rows.Close()
	var out []StorageEntry
	for rows.Next() {
		var e StorageEntry
		var m, n int64
		if err := rows.Scan(&e.Key, &m, &n); err != nil {
			return nil, db.wrap("storage list", err)
		}
		e.Modified, e.Size = fromNanos(m), n*6/8
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("storage list", err)
	}
	return out, nil
}

// MaxLockTTL is the longest lock lease TryLock and RefreshLock grant: a
// lock whose holder died blocks everyone else until it expires, and a
// bound keeps expiry plus the database's clock far from overflowing
// its nanoseconds.
const MaxLockTTL = 24 * time.Hour

// TryLock takes the lock name for owner for ttl, if it is free, expired
// or already owner's (then it is extended), in one statement so that
// two instances cannot both take it.
//
// Expiry is decided by the database's clock alone: the statement
// computes the new expiry as the database's now plus ttl and compares
// the stored one with the same now. Brokers whose own clocks disagree
// therefore agree on whether a lock is live; with expiries computed by
// each holder's clock, a broker running ahead would take live locks.
func (db *DB) TryLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := checkTTL(ttl); err != nil {
		return false, db.wrap("lock "+name, err)
	}
	r, err := db.exec(ctx, `INSERT INTO caddy_locks (name, owner, expires) VALUES ($1, $2, $now + $3)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
WHERE caddy_locks.expires <= $now OR caddy_locks.owner = excluded.owner`,
		name, owner, int64(ttl))
	if err != nil {
		return false, db.wrap("lock "+name, err)
	}
	n, err := affected(r)
	return n > 0, db.wrap("lock "+name, err)
}

// RefreshLock moves the expiry of owner's lock to the database's now
// plus ttl; false means owner does not hold it (any more): it expired
// and someone else took it, or it was unlocked. A lock that expired
// but was not taken is still owner's, and nobody else acted under it.
func (db *DB) RefreshLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := checkTTL(ttl); err != nil {
		return false, db.wrap("refresh lock "+name, err)
	}
	r, err := db.exec(ctx, "UPDATE caddy_locks SET expires = $now + $3 WHERE name = $1 AND owner = $2", name, owner, int64(ttl))
	if err != nil {
		return false, db.wrap("refresh lock "+name, err)
	}
	n, err := affected(r)
	return n > 0, db.wrap("refresh lock "+name, err)
}

func checkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxLockTTL {
		return fmt.Errorf("lock ttl %v is outside (0, %v]", ttl, MaxLockTTL)
	}
	return nil
}

// Unlock releases owner's lock; a lock held by someone else stays.
func (db *DB) Unlock(ctx context.Context, name, owner string) error {
	_, err := db.exec(ctx, "DELETE FROM caddy_locks WHERE name = $1 AND owner = $2", name, owner)
	return db.wrap("unlock "+name, err)
}
