package state

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// CredentialRow is one sealed record of a built-in store, stored as
// sealed: the AEAD's additional data binds Name, Version and UpdatedAt,
// so they are kept exactly.
type CredentialRow struct {
	Name       string
	Version    uint64
	UpdatedAt  time.Time
	Nonce      []byte
	Ciphertext []byte
}

// BuiltinHeader returns a built-in store's header document (format
// version, KDF parameters and salt, password check); ok is false when
// the store has none yet.
func (db *DB) BuiltinHeader(ctx context.Context, store string) ([]byte, bool, error) {
	var doc string
	err := db.queryRow(ctx, "SELECT doc FROM builtin_header WHERE store = $1", store).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, db.wrap("get builtin header "+store, err)
	}
	return []byte(doc), true, nil
}

// CreateBuiltinHeader stores doc as the store's header unless it has
// one, and returns the stored header: the first writer wins, and a
// broker that lost the race must use the winner's salt. Announces
// Change{TopicCredentials, store} when it created the header.
func (db *DB) CreateBuiltinHeader(ctx context.Context, store string, doc []byte) ([]byte, error) {
	var stored string
	err := db.write(ctx, "create builtin header "+store, func(t *txn) error {
		r, err := t.exec(ctx, "INSERT INTO builtin_header (store, doc) VALUES ($1, $2) ON CONFLICT (store) DO NOTHING", store, string(doc))
		if err != nil {
			return err
		}
		n, err := affected(r)
		if err != nil {
			return err
		}
		if n > 0 {
			t.publish(Change{Topic: TopicCredentials, Key: store})
		}
		return t.queryRow(ctx, "SELECT doc FROM builtin_header WHERE store = $1", store).Scan(&stored)
	})
	if err != nil {
		return nil, err
	}
	return []byte(stored), nil
}

// ListCredentials returns a store's records, by name.
func (db *DB) ListCredentials(ctx context.Context, store string) ([]CredentialRow, error) {
	rows, err := db.query(ctx, "SELECT name, version, updated_at, nonce, ciphertext FROM builtin_credentials WHERE store = $1 ORDER BY name", store)
	if err != nil {
		return nil, db.wrap("list credentials", err)
	}
	defer rows.Close()
	var out []CredentialRow
	for rows.Next() {
		var r CredentialRow
		var version, updated int64
		var nonce, ct string
		if err := rows.Scan(&r.Name, &version, &updated, &nonce, &ct); err != nil {
			return nil, db.wrap("list credentials", err)
		}
		if r.Nonce, err = base64.StdEncoding.DecodeString(nonce); err != nil {
			return nil, db.wrap("list credentials", fmt.Errorf("%s: nonce: %w", r.Name, err))
		}
		if r.Ciphertext, err = base64.StdEncoding.DecodeString(ct); err != nil {
			return nil, db.wrap("list credentials", fmt.Errorf("%s: ciphertext: %w", r.Name, err))
		}
		r.Version, r.UpdatedAt = uint64(version), fromNanos(updated)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list credentials", err)
	}
	return out, nil
}

// PutCredential stores a record whose Version is the stored one plus
// one, or 1 for a name the store does not have; anything else is
// ErrConflict, since another writer got there first (optimistic
// locking: nothing is held while the caller seals). The store must
// have a header. Announces Change{TopicCredentials, store}.
func (db *DB) PutCredential(ctx context.Context, store string, row CredentialRow) error {
	if row.Version == 0 || row.Version > uint64(1<<63-1) {
		return db.wrap("put credential "+row.Name, fmt.Errorf("version %d out of range", row.Version))
	}
	updated, err := storedNanos("updated_at", row.UpdatedAt)
	if err != nil {
		return db.wrap("put credential "+row.Name, err)
	}
	return db.write(ctx, "put credential "+row.Name, func(t *txn) error {
		var r sql.Result
		var err error
		nonce, ct := base64.StdEncoding.EncodeToString(row.Nonce), base64.StdEncoding.EncodeToString(row.Ciphertext)
		if row.Version == 1 {
			r, err = t.exec(ctx, `INSERT INTO builtin_credentials (store, name, version, updated_at, nonce, ciphertext)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (store, name) DO NOTHING`,
				store, row.Name, int64(row.Version), updated, nonce, ct)
		} else {
			r, err = t.exec(ctx, `UPDATE builtin_credentials SET version = $3, updated_at = $4, nonce = $5, ciphertext = $6
WHERE store = $1 AND name = $2 AND version = $7`,
				store, row.Name, int64(row.Version), updated, nonce, ct, int64(row.Version-1))
		}
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil {
			return err
		} else if n == 0 {
			return ErrConflict
		}
		t.publish(Change{Topic: TopicCredentials, Key: store})
		return nil
	})
}

// DeleteCredential removes a record, reporting whether there was one,
// and announces the change when there was.
func (db *DB) DeleteCredential(ctx context.Context, store, name string) (bool, error) {
	var found bool
	err := db.write(ctx, "delete credential "+name, func(t *txn) (err error) {
		found, err = t.execAnnounced(ctx, Change{Topic: TopicCredentials, Key: store}, "DELETE FROM builtin_credentials WHERE store = $1 AND name = $2", store, name)
		return err
	})
	return found, err
}

// ImportBuiltin copies a store read from its file (header and records,
// verbatim) in one transaction, only into a store with neither a header
// nor records: otherwise ErrNotEmpty and nothing changes. Announces
// Change{TopicCredentials, store}.
func (db *DB) ImportBuiltin(ctx context.Context, store string, header []byte, rows []CredentialRow) error {
	return db.write(ctx, "import builtin store "+store, func(t *txn) error {
		// Two brokers importing at once: the second waits on the
		// header's key, then inserts nothing.
		r, err := t.exec(ctx, "INSERT INTO builtin_header (store, doc) VALUES ($1, $2) ON CONFLICT (store) DO NOTHING", store, string(header))
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil {
			return err
		} else if n == 0 {
			return ErrNotEmpty
		}
		for _, row := range rows {
			if row.Version == 0 || row.Version > uint64(1<<63-1) {
				return fmt.Errorf("%s: version %d out of range", row.Name, row.Version)
			}
			updated, err := storedNanos(row.Name+": updated_at", row.UpdatedAt)
			if err != nil {
				return err
			}
			if _, err := t.exec(ctx, `INSERT INTO builtin_credentials (store, name, version, updated_at, nonce, ciphertext)
VALUES ($1, $2, $3, $4, $5, $6)`,
				store, row.Name, int64(row.Version), updated,
				base64.StdEncoding.EncodeToString(row.Nonce), base64.StdEncoding.EncodeToString(row.Ciphertext)); err != nil {
				return err
			}
		}
		t.publish(Change{Topic: TopicCredentials, Key: store})
		return nil
	})
}
