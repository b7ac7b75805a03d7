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
// by the built-in store (nil when none is kept here). Generation is
// taken from a database-wide counter whenever a redefinition changes
// where the refresh token comes from, so it is never reused (not even
// by a source deleted and defined again). RefreshVersion grows with
// every rotated refresh token kept for the row.
//
// Every write announces Change{TopicTokenSources, Name}.
type TokenSourceRow struct {
	Name           string
	Doc            []byte
	RefreshSealed  []byte
	Generation     int64
	RefreshVersion int64
	UpdatedAt      time.Time
}

const tokenSourceColumns = "name, doc, refresh_sealed, generation, refresh_version, updated_at"

type scanner interface{ Scan(dest ...any) error }

func scanTokenSource(sc scanner) (TokenSourceRow, error) {
	var r TokenSourceRow
	var doc, sealed string
	var updated int64
	if err := sc.Scan(&r.Name, &doc, &sealed, &r.Generation, &r.RefreshVersion, &updated); err != nil {
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

// ErrRefreshTaken is PutTokenSource's error when another token source
// already reads the refresh_token credential (one reader per refresh
// token: a rotated one works once).
var ErrRefreshTaken = errors.New("another token source reads this refresh token credential")

// PutTokenSource creates or replaces a token source's definition and
// returns its generation. refreshCred is the refresh_token credential
// it reads ("" for none); another source reading it is ErrRefreshTaken.
// sameRefresh is called with the definition it replaces (not for a new
// one): when it reports that the refresh token comes from the same
// place, the kept refresh token and the generation stay; otherwise the
// kept one is dropped and the source takes a new generation.
func (db *DB) PutTokenSource(ctx context.Context, name string, doc []byte, refreshCred string, sameRefresh func(old []byte) bool) (int64, error) {
	var gen int64
	err := db.write(ctx, "put token source "+name, func(t *txn) error {
		updated, err := storedNanos("updated_at", db.s.Now())
		if err != nil {
			return err
		}
		// Taken first, always: the counter's row lock orders every
		// writer (no lock is taken in the other order), so the check
		// below sees any definition committed before.
		next, err := nextTokenSourceGeneration(ctx, t)
		if err != nil {
			return err
		}
		cred := sql.NullString{String: refreshCred, Valid: refreshCred != ""}
		if cred.Valid {
			var other string
			err := t.queryRow(ctx, "SELECT name FROM token_sources WHERE refresh_cred = $1 AND name <> $2", refreshCred, name).Scan(&other)
			if err == nil {
				return fmt.Errorf("%w: token source %s reads %s", ErrRefreshTaken, other, refreshCred)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		r, err := t.exec(ctx, "INSERT INTO token_sources (name, doc, refresh_sealed, generation, updated_at, refresh_cred) VALUES ($1, $2, '', $3, $4, $5) ON CONFLICT (name) DO NOTHING",
			name, string(doc), next, updated, cred)
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil || n == 1 {
			gen = next
			t.publish(Change{Topic: TopicTokenSources, Key: name})
			return err
		}
		var old string
		if err := t.queryRow(ctx, "SELECT doc, generation FROM token_sources WHERE name = $1"+db.dialect.forUpdate, name).Scan(&old, &gen); err != nil {
			return err
		}
		if sameRefresh != nil && sameRefresh([]byte(old)) {
			_, err = t.exec(ctx, "UPDATE token_sources SET doc = $2, updated_at = $3, refresh_cred = $4 WHERE name = $1", name, string(doc), updated, cred)
		} else {
			gen = next
			_, err = t.exec(ctx, "UPDATE token_sources SET doc = $2, refresh_sealed = '', refresh_version = 0, generation = $3, updated_at = $4, refresh_cred = $5 WHERE name = $1",
				name, string(doc), gen, updated, cred)
		}
		if err == nil {
			t.publish(Change{Topic: TopicTokenSources, Key: name})
		}
		return err
	})
	return gen, err
}

// nextTokenSourceGeneration takes the next database-wide generation.
func nextTokenSourceGeneration(ctx context.Context, t *txn) (int64, error) {
	var gen int64
	err := t.queryRow(ctx, "UPDATE token_source_generations SET last = last + 1 WHERE id = 1 RETURNING last").Scan(&gen)
	return gen, err
}

// SetTokenSourceRefresh keeps a rotated refresh token for the token
// source name at generation gen whose refresh_version is still prev:
// sealed (nil when the token's own store now holds it, which drops a
// sealed one) and refresh_version grown by one. It reports whether the
// row was written: false when the source was redefined, deleted or
// given another rotated token since.
func (db *DB) SetTokenSourceRefresh(ctx context.Context, name string, gen, prev int64, sealed []byte) (bool, error) {
	var found bool
	err := db.write(ctx, "keep refresh token of "+name, func(t *txn) error {
		var err error
		found, err = t.execAnnounced(ctx, Change{Topic: TopicTokenSources, Key: name},
			"UPDATE token_sources SET refresh_sealed = $2, refresh_version = refresh_version + 1 WHERE name = $1 AND generation = $3 AND refresh_version = $4",
			name, base64.StdEncoding.EncodeToString(sealed), gen, prev)
		return err
	})
	return found, err
}

// AcquireTokenSourceFetch takes the fetch lease of token source name
// at generation gen for owner, for d by the database's clock, when no
// other owner holds an unexpired one. It returns whether it did and
// the row as it is now (found false: no source at that generation).
// A lease is not announced.
func (db *DB) AcquireTokenSourceFetch(ctx context.Context, name string, gen int64, owner string, d time.Duration) (acquired bool, r TokenSourceRow, found bool, err error) {
	err = db.write(ctx, "lease fetch of "+name, func(t *txn) error {
		res, err := t.exec(ctx, "UPDATE token_sources SET fetch_owner = $2, fetch_until = $now + $4 WHERE name = $1 AND generation = $3 AND fetch_until < $now",
			name, owner, gen, d.Nanoseconds())
		if err != nil {
			return err
		}
		n, err := affected(res)
		if err != nil {
			return err
		}
		acquired = n == 1
		r, err = scanTokenSource(t.queryRow(ctx, "SELECT "+tokenSourceColumns+" FROM token_sources WHERE name = $1 AND generation = $2", name, gen))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		found = true
		return nil
	})
	return acquired, r, found, err
}

// ReleaseTokenSourceFetch gives up owner's fetch lease of name.
func (db *DB) ReleaseTokenSourceFetch(ctx context.Context, name, owner string) error {
	return db.write(ctx, "release fetch of "+name, func(t *txn) error {
		_, err := t.exec(ctx, "UPDATE token_sources SET fetch_owner = '', fetch_until = 0 WHERE name = $1 AND fetch_owner = $2", name, owner)
		return err
	})
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
