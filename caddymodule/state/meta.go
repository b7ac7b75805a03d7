package state

import (
	"context"
	"database/sql"
	"errors"
)

// Meta returns a fact about the database; ok is false when it is unset.
func (db *DB) Meta(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := db.queryRow(ctx, "SELECT value FROM meta WHERE key = $1", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, db.wrap("get meta "+key, err)
	}
	return v, true, nil
}

// SetMeta sets a fact about the database.
func (db *DB) SetMeta(ctx context.Context, key, value string) error {
	_, err := db.exec(ctx, "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)
	return db.wrap("set meta "+key, err)
}

// Empty reports whether the database has no services, no sessions and
// no built-in store header: a new database, into which the app imports
// its files from before the database existed.
func (db *DB) Empty(ctx context.Context) (bool, error) {
	for _, table := range []string{"services", "sessions", "builtin_header"} {
		var one int
		err := db.queryRow(ctx, "SELECT 1 FROM "+table+" LIMIT 1").Scan(&one)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return false, db.wrap("empty", err)
		default:
			return false, nil
		}
	}
	return true, nil
}

// ClaimMeta sets key to value unless it is set already, and returns the
// value stored: the first writer wins. Two brokers starting together on
// a new database both see it Empty; claiming a key before importing
// their files lets exactly one of them import.
func (db *DB) ClaimMeta(ctx context.Context, key, value string) (string, error) {
	var stored string
	err := db.write(ctx, "claim meta "+key, func(t *txn) error {
		if _, err := t.exec(ctx, "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value); err != nil {
			return err
		}
		return t.queryRow(ctx, "SELECT value FROM meta WHERE key = $1", key).Scan(&stored)
	})
	if err != nil {
		return "", err
	}
	return stored, nil
}
