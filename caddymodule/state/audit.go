package state

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/pagecursor"
)

// AuditRow is one audit entry as stored. Detail is short text and never
// a value, password or token (the caller's promise: state stores what
// it is given).
type AuditRow struct {
	ID        string
	At        time.Time
	Actor     string
	ActorKind string
	Action    string
	Target    string
	Client    string
	Detail    string
}

// Cursor is a position in a list's order (At, then ID), the audit
// trail's and the activity log's: ListAudit or ListActivity with Before
// set to the last row of a page returns the next, older page. A cursor
// with an empty ID means strictly before At.
type Cursor = pagecursor.Cursor

// AuditFilter selects audit entries: an empty field matches every
// value; Before, when set, keeps only entries older than the cursor.
// Limit is clamped to 1..MaxPageLimit; 0 is DefaultPageLimit.
type AuditFilter struct {
	Actor  string
	Action string
	Target string
	Before *Cursor
	Limit  int
}

// InsertAudit stores an audit entry; an existing id is ErrConflict.
func (db *DB) InsertAudit(ctx context.Context, a AuditRow) error {
	op := "insert audit " + a.ID
	if a.ID == "" || a.Action == "" {
		return db.wrap(op, errors.New("an audit entry needs an id and an action"))
	}
	at, err := storedNanos("at", a.At)
	if err != nil {
		return db.wrap(op, err)
	}
	return db.write(ctx, op, func(t *txn) error {
		r, err := t.exec(ctx, `INSERT INTO audit (id, at, actor, actor_kind, action, target, client, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
			a.ID, at, a.Actor, a.ActorKind, a.Action, a.Target, a.Client, a.Detail)
		if err != nil {
			return err
		}
		if n, err := affected(r); err != nil {
			return err
		} else if n == 0 {
			return ErrConflict
		}
		return nil
	})
}

// ListAudit returns the entries f selects, newest first by (at, id), at
// most f's clamped Limit of them. Paging with Before set to the last
// entry returned visits every entry exactly once, entries sharing a
// time included.
func (db *DB) ListAudit(ctx context.Context, f AuditFilter) ([]AuditRow, error) {
	var w where
	w.equal("actor", f.Actor)
	w.equal("action", f.Action)
	w.equal("target", f.Target)
	if f.Before != nil {
		at := w.arg(boundNanos(f.Before.At))
		w.conds = append(w.conds, "(at < "+at+" OR (at = "+at+" AND id < "+w.arg(f.Before.ID)+"))")
	}
	rows, err := db.query(ctx, "SELECT id, at, actor, actor_kind, action, target, client, detail FROM audit"+w.sql()+
		" ORDER BY at DESC, id DESC LIMIT "+strconv.Itoa(pageLimit(f.Limit)), w.args...)
	if err != nil {
		return nil, db.wrap("list audit", err)
	}
	defer rows.Close()
	var out []AuditRow
	for rows.Next() {
		var a AuditRow
		var at int64
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.ActorKind, &a.Action, &a.Target, &a.Client, &a.Detail); err != nil {
			return nil, db.wrap("list audit", err)
		}
		a.At = fromNanos(at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap("list audit", err)
	}
	return out, nil
}

// DeleteAuditBefore deletes the entries older than t (the retention)
// and returns how many.
func (db *DB) DeleteAuditBefore(ctx context.Context, t time.Time) (int, error) {
	return db.deleteCount(ctx, "delete old audit", "DELETE FROM audit WHERE at < $1", boundNanos(t))
}
