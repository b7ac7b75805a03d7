package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// ActivityRow is one activity entry as stored (see package activity).
// No field holds a secret (the caller's promise).
type ActivityRow struct {
	ID          string
	At          time.Time
	Instance    string
	Session     string
	Agent       string
	Service     string
	Method      string
	Host        string
	Port        int
	Path        string
	Status      int
	Decision    string
	Code        string
	Reason      string
	BytesIn     int64
	BytesOut    int64
	Duration    time.Duration
	Credentials []string
	Client      string
}

// ActivityFilter selects activity entries: an empty (zero) field
// matches every value. Since keeps entries at or after it; Before,
// when set, entries older than the cursor (the same order as the audit
// trail's, (at, id)); After, when set, entries newer than the cursor
// (an empty ID: from its time on), oldest first (the live stream's
// reads). Limit is clamped to 1..MaxPageLimit; 0 is DefaultPageLimit.
type ActivityFilter struct {
	Session  string
	Agent    string
	Service  string
	Host     string
	Decision string
	Code     string
	Status   int
	Since    time.Time
	Before   *Cursor
	After    *Cursor
	Limit    int
}

// activityColumns in the order of inserts and selects.
const activityColumns = "id, at, instance, session, agent, service, method, host, port, path, status, decision, code, reason, " +
	"bytes_in, bytes_out, duration_ns, credentials, client"

// activityColumnCount is derived, so the two cannot disagree.
var activityColumnCount = strings.Count(activityColumns, ",") + 1

// activityChunk is how many rows one INSERT carries on PostgreSQL (19
// parameters each, well under its limit): one round trip per chunk.
// SQLite takes one row per statement, prepared once per batch: the
// driver looks each parameter up by position in a list, so binding a
// statement of n parameters costs n² (a 100-row INSERT cost 150 µs an
// entry, a prepared one-row INSERT a few).
const activityChunk = 100

// InsertActivity stores entries in one transaction. An id that is
// stored already is skipped (the retry of a batch that did commit).
func (db *DB) InsertActivity(ctx context.Context, rows []ActivityRow) error {
	const op = "insert activity"
	if len(rows) == 0 {
		return nil
	}
	for _, r := range rows {
		if r.ID == "" {
			return db.wrap(op, errors.New("an activity entry needs an id"))
		}
		if _, err := storedNanos("at", r.At); err != nil {
			return db.wrap(op, err)
		}
	}
	chunk := 1
	if db.pg {
		chunk = activityChunk
	}
	args := make([]any, 0, activityColumnCount*min(len(rows), chunk))
	return db.write(ctx, op, func(t *txn) error {
		var full *sql.Stmt // the statement of a whole chunk, prepared once
		defer func() {
			if full != nil {
				full.Close()
			}
		}()
		for start := 0; start < len(rows); start += chunk {
			part := rows[start:min(start+chunk, len(rows))]
			args = args[:0]
			for _, r := range part {
				creds, err := json.Marshal(nonNil(r.Credentials))
				if err != nil {
					return err
				}
				args = append(args, r.ID, r.At.UnixNano(), r.Instance, r.Session, r.Agent, r.Service, r.Method, r.Host, r.Port,
					r.Path, r.Status, r.Decision, r.Code, r.Reason, r.BytesIn, r.BytesOut, int64(r.Duration), string(creds), r.Client)
			}
			if len(part) < chunk {
				if _, err := t.exec(ctx, activityInsert(len(part)), args...); err != nil {
					return err
				}
				continue
			}
			if full == nil {
				var err error
				if full, err = t.tx.PrepareContext(ctx, db.q(activityInsert(chunk))); err != nil {
					return err
				}
			}
			if _, err := full.ExecContext(ctx, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// activityInsert is the INSERT of n rows.
func activityInsert(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO activity (" + activityColumns + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range activityColumnCount {
			if c > 0 {
				b.WriteString(", ")
			}
			b.WriteString("$" + strconv.Itoa(i*activityColumnCount+c+1))
		}
		b.WriteByte(')')
	}
	b.WriteString(" ON CONFLICT (id) DO NOTHING")
	return b.String()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ListActivity returns the entries f selects, newest first by (at, id)
// (oldest first with After), at most f's clamped Limit of them. Paging with Before set to the last
// entry returned visits every entry exactly once.
func (db *DB) ListActivity(ctx context.Context, f ActivityFilter) ([]ActivityRow, error) {
	const op = "list activity"
	var w where
	w.equal("session", f.Session)
	w.equal("agent", f.Agent)
	w.equal("service", f.Service)
	w.equal("host", f.Host)
	w.equal("decision", f.Decision)
	w.equal("code", f.Code)
	if f.Status != 0 {
		w.conds = append(w.conds, "status = "+w.arg(f.Status))
	}
	if !f.Since.IsZero() {
		w.conds = append(w.conds, "at >= "+w.arg(boundNanos(f.Since)))
	}
	if f.Before != nil {
		// The redundant at <= bound is a range both planners use on the
		// (…, at, id) indexes; the OR alone made PostgreSQL filter a
		// filter value's rows one by one (36 ms at 1M rows, not 1).
		at := w.arg(boundNanos(f.Before.At))
		w.conds = append(w.conds, "at <= "+at+" AND (at < "+at+" OR id < "+w.arg(f.Before.ID)+")")
	}
	order := " ORDER BY at DESC, id DESC"
	if f.After != nil {
		at := w.arg(boundNanos(f.After.At)) // the same range, the other way
		w.conds = append(w.conds, "at >= "+at+" AND (at > "+at+" OR id > "+w.arg(f.After.ID)+")")
		order = " ORDER BY at, id"
	}
	rows, err := db.query(ctx, "SELECT "+activityColumns+" FROM activity"+w.sql()+
		order+" LIMIT "+strconv.Itoa(pageLimit(f.Limit)), w.args...)
	if err != nil {
		return nil, db.wrap(op, err)
	}
	defer rows.Close()
	var out []ActivityRow
	for rows.Next() {
		var r ActivityRow
		var at, dur int64
		var creds string
		if err := rows.Scan(&r.ID, &at, &r.Instance, &r.Session, &r.Agent, &r.Service, &r.Method, &r.Host, &r.Port, &r.Path,
			&r.Status, &r.Decision, &r.Code, &r.Reason, &r.BytesIn, &r.BytesOut, &dur, &creds, &r.Client); err != nil {
			return nil, db.wrap(op, err)
		}
		r.At, r.Duration = fromNanos(at), time.Duration(dur)
		if err := json.Unmarshal([]byte(creds), &r.Credentials); err != nil {
			return nil, db.wrap(op, err)
		}
		r.Credentials = nonNil(r.Credentials)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap(op, err)
	}
	return out, nil
}

// defaultActivityDeleteChunk is how many entries one DELETE of a purge
// removes: each is its own statement and transaction, so a backlog of
// a million rows never holds SQLite's write lock (and with it every
// other write of the broker) for seconds.
const defaultActivityDeleteChunk = 5000

// DeleteActivityBefore deletes the entries older than t (retention by
// age) and returns how many.
func (db *DB) DeleteActivityBefore(ctx context.Context, t time.Time) (int, error) {
	return db.deleteActivity(ctx, "delete old activity", "at < $1", boundNanos(t))
}

// deleteActivity deletes the entries cond selects, oldest first, in
// chunks (defaultActivityDeleteChunk), until none is left or ctx ends;
// it returns how many went. Each chunk is a range of the (at, id)
// index.
func (db *DB) deleteActivity(ctx context.Context, op, cond string, args ...any) (int, error) {
	chunk := defaultActivityDeleteChunk
	if db.activityDeleteChunk > 0 {
		chunk = db.activityDeleteChunk
	}
	query := "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE " + cond +
		" ORDER BY at, id LIMIT " + strconv.Itoa(chunk) + ")"
	total := 0
	for {
		n, err := db.deleteCount(ctx, op, query, args...)
		total += n
		if err != nil || n < chunk {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, db.wrap(op, err)
		}
	}
}

// TrimActivity deletes all but the newest keep entries (retention by
// count) and returns how many went.
func (db *DB) TrimActivity(ctx context.Context, keep int) (int, error) {
	const op = "trim activity"
	if keep < 0 {
		return 0, db.wrap(op, errors.New("keep must not be negative"))
	}
	// The newest entry that goes (one walk of the (at, id) index);
	// everything at or before it goes, in chunks.
	var at int64
	var id string
	err := db.queryRow(ctx, "SELECT at, id FROM activity ORDER BY at DESC, id DESC LIMIT 1 OFFSET "+strconv.Itoa(keep)).Scan(&at, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, db.wrap(op, err)
	}
	return db.deleteActivity(ctx, op, "(at < $1 OR (at = $1 AND id <= $2))", at, id)
}
