package state

import (
	"context"
	"encoding/base64"
	"fmt"
	"time"
)

// TokenSourceRow is one credential that mints tokens: Doc is the
// tokensource.Spec JSON; RefreshSealed a rotated refresh token sealed
// by the built-in store (nil when none is kept here).
type TokenSourceRow struct {
	Name          string
	Doc           []byte
	RefreshSealed []byte
	UpdatedAt     time.Time
}

// ListTokenSources returns every token source, by name.
func (db *DB) ListTokenSources(ctx context.Context) ([]TokenSourceRow, error) {
	rows, err := db.query(ctx, "SELECT name, doc, refresh_sealed, updated_at FROM token_sources ORDER BY name")
	if err != nil {
		return nil, db.wrap("list token sources", err)
	}
	defer rows.Close()
	var out []TokenSourceRow
	for rows.Next() {
		var r TokenSourceRow
		var doc, sealed string
		var updated int64
		if err := rows.Scan(&r.Name, &doc, &sealed, &updated); err != nil {
			return nil, db.wrap("list token sources", err)
		}
		if sealed != "" {
			if r.RefreshSealed, err = base64.StdEncoding.DecodeString(sealed); err != nil {
				return nil, db.wrap("list token sources", fmt.Errorf("%s: refresh_sealed: %w", r.Name, err))
			}
		}
		r.Doc, r.UpdatedAt = []byte(doc), fromNanos(updated)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list token sources", err)
	}
	return out, nil
}

// PutTokenSource creates or replaces a token source's definition; a
// replaced definition drops the refresh token kept for it.
func (db *DB) PutTokenSource(ctx context.Context, name string, doc []byte) error {
	return db.write(ctx, "put token source "+name, func(t *txn) error {
		updated, err := storedNanos("updated_at", db.s.Now())
		if err != nil {
			return err
		}
		_, err = t.exec(ctx, `INSERT INTO token_sources (name, doc, refresh_sealed, updated_at) VALUES ($1, $2, '', $3)
ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, refresh_sealed = '', updated_at = excluded.updated_at`,
			name, string(doc), updated)
		return err
	})
}

// SetTokenSourceRefresh keeps a sealed rotated refresh token for the
// token source name; it reports whether the source exists.
func (db *DB) SetTokenSourceRefresh(ctx context.Context, name string, sealed []byte) (bool, error) {
	var found bool
	err := db.write(ctx, "keep refresh token of "+name, func(t *txn) error {
		r, err := t.exec(ctx, "UPDATE token_sources SET refresh_sealed = $2 WHERE name = $1", name, base64.StdEncoding.EncodeToString(sealed))
		if err != nil {
			return err
		}
		n, err := affected(r)
		found = n > 0
		return err
	})
	return found, err
}

// DeleteTokenSource removes a token source, reporting whether there
// was one.
func (db *DB) DeleteTokenSource(ctx context.Context, name string) (bool, error) {
	var found bool
	err := db.write(ctx, "delete token source "+name, func(t *txn) error {
		r, err := t.exec(ctx, "DELETE FROM token_sources WHERE name = $1", name)
		if err != nil {
			return err
		}
		n, err := affected(r)
		found = n > 0
		return err
	})
	return found, err
}
