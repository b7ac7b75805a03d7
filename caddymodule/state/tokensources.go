package state

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// TokenSourceRow is one credential that mints tokens: Doc is the
// tokensource.Spec JSON; RefreshSealed a rotated refresh token sealed
// by the built-in store (nil when none is kept here). Generation grows
// when a redefinition changes where the refresh token comes from.
//
// Every write announces Change{TopicTokenSources, Name}.
type TokenSourceRow struct {
	Name          string
	Doc           []byte
	RefreshSealed []byte
	Generation    int64
	UpdatedAt     time.Time
}

const tokenSourceColumns = "name, doc, refresh_sealed, generation, updated_at"

type scanner interface{ Scan(dest ...any) error }

func scanTokenSource(sc scanner) (TokenSourceRow, error) {
	var r TokenSourceRow
	var doc, sealed string
	var updated int64
	if err := sc.Scan(&r.Name, &doc, &sealed, &r.Generation, &updated); err != nil {
		return r, err
	}
	if sealed != "" {
		var err error
		if r.RefreshSealed, err = base64.StdEncoding.DecodeString(sealed); err != nil {
			return r, fmt.Errorf("%s: refresh_sealed: %w", r.Name, err)
		}
	}
	r.Doc, r.UpdatedAt = []byte(doc), fromNanos(updated)
	return r, nil
}

// ListTokenSources returns every token source, by name.
func (db *DB) ListTokenSources(ctx context.Context) ([]TokenSourceRow, error) {
	rows, err := db.query(ctx, "SELECT "+tokenSourceColumns+" FROM token_sources ORDER BY name")
	if err != nil {
		return nil, db.wrap("list token sources", err)
	}
	defer rows.Close()
	var out []TokenSourceRow
	for rows.Next() {
		r, err := scanTokenSource(rows)
		if err != nil {
			return nil, db.wrap("list token sources", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list token sources", err)
	}
	return out, nil
}

// GetTokenSource returns one token source; found is false when there
// is none.
func (db *DB) GetTokenSource(ctx context.Context, name string) (r TokenSourceRow, found bool, err error) {
	rows, err := db.query(ctx, "SELECT "+tokenSourceColumns+" FROM token_sources WHERE name = $1", name)
	if err != nil {
		return r, false, db.wrap("get token source "+name, err)
	}
	defer rows.Close()
	if rows.Next() {
		if r, err = scanTokenSource(rows); err != nil {
			return r, false, db.wrap("get token source "+name, err)
		}
		found = true
	}
	if err := rows.Err(); err != nil {
		return r, false, db.wrap("get token source "+name, err)
	}
	return r, found, nil
}

// PutTokenSource creates or replaces a token source's definition and
// returns its generation. sameRefresh is called with the definition it
// replaces (not for a new one): when it reports that the refresh token
// comes from the same place, the kept refresh token and the generation
// stay; otherwise the kept one is dropped and the generation grows.
func (db *DB) PutTokenSource(ctx context.Context, name string, doc []byte, sameRefresh func(old []byte) bool) (int64, error) {
	var gen int64
	err := db.write(ctx, "put token source "+name, func(t *txn) error {
		updated, err := storedNanos("updated_at", db.s.Now())
		if err != nil {
			return err
		}
		var old string
		err = t.queryRow(ctx, "SELECT doc, generation FROM token_sources WHERE name = $1", name).Scan(&old, &gen)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			gen = 1
			_, err = t.exec(ctx, "INSERT INTO token_sources (name, doc, refresh_sealed, generation, updated_at) VALUES ($1, $2, '', $3, $4)",
				name, string(doc), gen, updated)
		case err != nil:
		case sameRefresh != nil && sameRefresh([]byte(old)):
			_, err = t.exec(ctx, "UPDATE token_sources SET doc = $2, updated_at = $3 WHERE name = $1", name, string(doc), updated)
		default:
			gen++
			_, err = t.exec(ctx, "UPDATE token_sources SET doc = $2, refresh_sealed = '', generation = $3, updated_at = $4 WHERE name = $1",
				name, string(doc), gen, updated)
		}
		if err == nil {
			t.publish(Change{Topic: TopicTokenSources, Key: name})
		}
		return err
	})
	return gen, err
}

// SetTokenSourceRefresh keeps a sealed rotated refresh token for the
// token source name at generation gen; it reports whether the source
// exists at that generation (a redefinition since is not written into).
func (db *DB) SetTokenSourceRefresh(ctx context.Context, name string, gen int64, sealed []byte) (bool, error) {
	var found bool
	err := db.write(ctx, "keep refresh token of "+name, func(t *txn) error {
		var err error
		found, err = t.execAnnounced(ctx, Change{Topic: TopicTokenSources, Key: name},
			"UPDATE token_sources SET refresh_sealed = $2 WHERE name = $1 AND generation = $3", name, base64.StdEncoding.EncodeToString(sealed), gen)
		return err
	})
	return found, err
}

// DeleteTokenSource removes a token source, reporting whether there
// was one.
func (db *DB) DeleteTokenSource(ctx context.Context, name string) (bool, error) {
	var found bool
	err := db.write(ctx, "delete token source "+name, func(t *txn) error {
		var err error
		found, err = t.execAnnounced(ctx, Change{Topic: TopicTokenSources, Key: name}, "DELETE FROM token_sources WHERE name = $1", name)
		return err
	})
	return found, err
}
