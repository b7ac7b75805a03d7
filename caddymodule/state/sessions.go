package state

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// SessionRow is one agent session as stored. The token is never stored,
// only its SHA-256.
type SessionRow struct {
	ID           string
	TokenHash    [32]byte
	Services     []string
	Placeholders map[string]string // credential -> placeholder
	Agent        string
	CreatedAt    time.Time
	ExpiresAt    time.Time
	RevokedAt    *time.Time // nil: not revoked
	LastUsed     *time.Time // nil: never used
	Requests     uint64
	// LeaseTimeout is how long the session lives without a renewal; 0
	// means it has no lease (it lives until ExpiresAt or revoked).
	LeaseTimeout time.Duration
	// LeaseUntil is when the lease lapses unless renewed; nil exactly
	// when LeaseTimeout is 0.
	LeaseUntil *time.Time
}

// SessionActivity is use of a session since the last flush: Requests is
// a delta, LastUsed the latest use.
type SessionActivity struct {
	ID       string
	Requests uint64
	LastUsed time.Time
}

const sessionColumns = "id, token_hash, services, placeholders, agent, created_at, expires_at, revoked_at, last_used, requests, lease_timeout, lease_until"

// InsertSession stores a new session and announces
// Change{TopicSessions, id}. An existing id or token hash is
// ErrConflict (a session is never overwritten). A lease is both a
// positive LeaseTimeout and a LeaseUntil, or neither: half a lease is
// refused, since nobody could say whether the session is leased.
func (db *DB) InsertSession(ctx context.Context, s SessionRow) error {
	switch {
	case s.LeaseTimeout < 0:
		return db.wrap("insert session "+s.ID, fmt.Errorf("negative lease timeout %v", s.LeaseTimeout))
	case (s.LeaseTimeout > 0) != (s.LeaseUntil != nil):
		return db.wrap("insert session "+s.ID, errors.New("a lease needs both a lease timeout and a lease_until"))
	}
	services := s.Services
	if services == nil {
		services = []string{}
	}
	placeholders := s.Placeholders
	if placeholders == nil {
		placeholders = map[string]string{}
	}
	svc, err := json.Marshal(services)
	if err != nil {
		return db.wrap("insert session", err)
	}
	ph, err := json.Marshal(placeholders)
	if err != nil {
		return db.wrap("insert session", err)
	}
	created, err := storedNanos("created_at", s.CreatedAt)
	if err != nil {
		return db.wrap("insert session "+s.ID, err)
	}
	expires, err := storedNanos("expires_at", s.ExpiresAt)
	if err != nil {
		return db.wrap("insert session "+s.ID, err)
	}
	revoked, err := storedNullNanos("revoked_at", s.RevokedAt)
	if err != nil {
		return db.wrap("insert session "+s.ID, err)
	}
	lastUsed, err := storedNullNanos("last_used", s.LastUsed)
	if err != nil {
		return db.wrap("insert session "+s.ID, err)
	}
	leaseUntil, err := storedNullNanos("lease_until", s.LeaseUntil)
	if err != nil {
		return db.wrap("insert session "+s.ID, err)
	}
	return db.write(ctx, "insert session "+s.ID, func(t *txn) error {
		r, err := t.exec(ctx, `INSERT INTO sessions (`+sessionColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`,
			s.ID, hex.EncodeToString(s.TokenHash[:]), string(svc), string(ph), s.Agent,
			created, expires, revoked, lastUsed, clampInt64(s.Requests), int64(s.LeaseTimeout), leaseUntil)
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil {
			return err
		} else if n == 0 {
			return ErrConflict
		}
		t.publish(Change{Topic: TopicSessions, Key: s.ID})
		return nil
	})
}

// RevokeSession marks a session revoked at at, reporting whether it
// exists. It is idempotent: a session revoked before keeps its first
// revoked_at (and still reports true). A found session's change is
// announced every time, so a retry also repeats a lost notification.
func (db *DB) RevokeSession(ctx context.Context, id string, at time.Time) (bool, error) {
	revoked, err := storedNanos("revoked_at", at)
	if err != nil {
		return false, db.wrap("revoke session "+id, err)
	}
	var found bool
	err = db.write(ctx, "revoke session "+id, func(t *txn) (err error) {
		found, err = t.execAnnounced(ctx, Change{Topic: TopicSessions, Key: id}, "UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1", id, revoked)
		return err
	})
	return found, err
}

// RenewSessionLease moves a leased session's lease_until to until (never
// back: of two renewals committed out of order, the later lease stands)
// and announces Change{TopicSessions, id}, so that every broker sees the
// new lease. found is false, with a nil error, when there is no such
// session. A session that exists but cannot be renewed is found, with
// ErrEnded when it is revoked, expired or its lease lapsed already (by
// the Config clock: a lease is live while now < lease_until), and
// ErrNotLeased when it has no lease; nothing is written or announced
// then.
func (db *DB) RenewSessionLease(ctx context.Context, id string, until time.Time) (found bool, err error) {
	op := "renew session lease " + id
	u, err := storedNanos("lease_until", until)
	if err != nil {
		return false, db.wrap(op, err)
	}
	now := boundNanos(db.s.Now())
	err = db.write(ctx, op, func(t *txn) error {
		var revoked, leaseUntil sql.NullInt64
		var expires, leaseTimeout int64
		err := t.queryRow(ctx, "SELECT revoked_at, expires_at, lease_timeout, lease_until FROM sessions WHERE id = $1"+db.dialect.forUpdate, id).
			Scan(&revoked, &expires, &leaseTimeout, &leaseUntil)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		switch {
		case revoked.Valid || expires <= now:
			return ErrEnded
		case leaseTimeout <= 0 && !leaseUntil.Valid:
			return ErrNotLeased
		case !leaseUntil.Valid || leaseUntil.Int64 <= now:
			// Lapsed, or half a lease (see scanSession): over.
			return ErrEnded
		}
		if _, err := t.exec(ctx, "UPDATE sessions SET lease_until = $2 WHERE id = $1 AND lease_until < $2", id, u); err != nil {
			return err
		}
		// Announced even when a later renewal was there first: a retry
		// repeats a lost notification, as RevokeSession's does.
		t.publish(Change{Topic: TopicSessions, Key: id})
		return nil
	})
	return found, err
}

// Session returns one session; ok is false when there is none.
func (db *DB) Session(ctx context.Context, id string) (SessionRow, bool, error) {
	s, err := scanSession(db.queryRow(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE id = $1", id))
	if errors.Is(err, sql.ErrNoRows) {
		return SessionRow{}, false, nil
	}
	if err != nil {
		return SessionRow{}, false, db.wrap("get session "+id, err)
	}
	return s, true, nil
}

// ListSessions returns the sessions that expire after expiredAfter
// (revoked ones included), oldest first.
func (db *DB) ListSessions(ctx context.Context, expiredAfter time.Time) ([]SessionRow, error) {
	rows, err := db.query(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE expires_at > $1 ORDER BY created_at, id", boundNanos(expiredAfter))
	if err != nil {
		return nil, db.wrap("list sessions", err)
	}
	defer rows.Close()
	var out []SessionRow
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, db.wrap("list sessions", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list sessions", err)
	}
	return out, nil
}

// AddSessionActivity adds each entry's request count and moves
// last_used forward (never back), all in one transaction. Sessions that
// no longer exist are skipped. It announces nothing: counters change
// every second on a busy broker and no instance acts on them, so other
// instances see them at their next full reload.
func (db *DB) AddSessionActivity(ctx context.Context, activity []SessionActivity) error {
	if len(activity) == 0 {
		return nil
	}
	return db.write(ctx, "add session activity", func(t *txn) error {
		for _, a := range activity {
			last, err := storedNanos("last_used of "+a.ID, a.LastUsed)
			if err != nil {
				return err
			}
			if _, err := t.exec(ctx, `UPDATE sessions SET requests = requests + $2,
last_used = CASE WHEN last_used IS NULL OR last_used < $3 THEN $3 ELSE last_used END
WHERE id = $1`, a.ID, clampInt64(a.Requests), last); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteSessionsExpiredBefore removes sessions that expired before t and
// returns how many; when there were any it announces a reload of the
// sessions topic (instances drop sessions the database no longer has).
func (db *DB) DeleteSessionsExpiredBefore(ctx context.Context, t time.Time) (int, error) {
	var n int64
	err := db.write(ctx, "delete expired sessions", func(tx *txn) error {
		r, err := tx.exec(ctx, "DELETE FROM sessions WHERE expires_at < $1", boundNanos(t))
		if err != nil {
			return err
		}
		if n, err = affected(r); err != nil {
			return err
		}
		if n > 0 {
			tx.publish(Change{Topic: TopicSessions})
		}
		return nil
	})
	return int(n), err
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

func scanSession(r rowScanner) (SessionRow, error) {
	var s SessionRow
	var hash, services, placeholders string
	var created, expires, requests, leaseTimeout int64
	var revoked, lastUsed, leaseUntil sql.NullInt64
	if err := r.Scan(&s.ID, &hash, &services, &placeholders, &s.Agent, &created, &expires, &revoked, &lastUsed, &requests,
		&leaseTimeout, &leaseUntil); err != nil {
		return SessionRow{}, err
	}
	b, err := hex.DecodeString(hash)
	if err != nil || len(b) != len(s.TokenHash) {
		return SessionRow{}, fmt.Errorf("session %s: malformed token_hash", s.ID)
	}
	copy(s.TokenHash[:], b)
	if err := json.Unmarshal([]byte(services), &s.Services); err != nil {
		return SessionRow{}, fmt.Errorf("session %s: services: %w", s.ID, err)
	}
	if err := json.Unmarshal([]byte(placeholders), &s.Placeholders); err != nil {
		return SessionRow{}, fmt.Errorf("session %s: placeholders: %w", s.ID, err)
	}
	s.CreatedAt, s.ExpiresAt = fromNanos(created), fromNanos(expires)
	s.RevokedAt, s.LastUsed = fromNullNanos(revoked), fromNullNanos(lastUsed)
	if requests > 0 {
		s.Requests = uint64(requests)
	}
	// Half a lease (a row edited by hand, say) reads as a lease, never
	// as a session without one (fail closed): without lease_until, one
	// that lapsed when the session was created; without a timeout, the
	// shortest one.
	switch {
	case leaseTimeout < 0:
		return SessionRow{}, fmt.Errorf("session %s: negative lease_timeout", s.ID)
	case leaseTimeout > 0 && !leaseUntil.Valid:
		leaseUntil = sql.NullInt64{Int64: created, Valid: true}
	case leaseTimeout == 0 && leaseUntil.Valid:
		leaseTimeout = 1
	}
	s.LeaseTimeout, s.LeaseUntil = time.Duration(leaseTimeout), fromNullNanos(leaseUntil)
	return s, nil
}

// clampInt64 stores a counter in a signed BIGINT.
func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}
