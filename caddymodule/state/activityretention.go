package state

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"time"
)

// defaultActivityDeleteChunk is about how many entries one transaction
// of a purge removes (whole chunks, at least one): each is its own
// transaction, so a backlog of a million entries never holds SQLite's
// write lock (and with it every other write of the broker) for
// seconds.
const defaultActivityDeleteChunk = 5000

// DeleteActivityBefore deletes the entries older than t (retention by
// age) and returns how many: the chunks whose last entry is older, and
// from the few that hold entries on both sides of t the older ones (the
// chunk is written again without them).
func (db *DB) DeleteActivityBefore(ctx context.Context, t time.Time) (int, error) {
	const op = "delete old activity"
	cut := boundNanos(t)
	n, err := db.deleteChunks(ctx, op, "last_at < $1", cut)
	if err != nil {
		return n, err
	}
	m, err := db.trimStraddlers(ctx, op, cut)
	return n + m, err
}

// TrimActivity deletes all but the newest keep entries (retention by
// count), in whole chunks, and returns how many went: it keeps the
// chunks with the newest last entries that hold keep entries or more,
// so between keep and keep+63 entries stay. Chunks of brokers that
// wrote at the same time overlap, so an entry it deletes can be newer
// than one it keeps, by up to the span of a chunk (maxChunkSpan).
func (db *DB) TrimActivity(ctx context.Context, keep int) (int, error) {
	const op = "trim activity"
	if keep < 0 {
		return 0, db.wrap(op, errors.New("keep must not be negative"))
	}
	// The newest chunk that goes: the first, newest first, with keep
	// entries or more in the chunks newer than it (a running sum over
	// the (last_at, id) index, not a read of every entry).
	var at int64
	var id string
	err := db.queryRow(ctx, `SELECT last_at, id FROM (
    SELECT last_at, id, entries, SUM(entries) OVER (ORDER BY last_at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS upto
    FROM activity_chunks
) newest WHERE upto - entries >= $1 ORDER BY last_at DESC, id DESC LIMIT 1`, keep).Scan(&at, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, db.wrap(op, err)
	}
	// The redundant last_at <= $1 is the range of the index.
	return db.deleteChunks(ctx, op, "last_at <= $1 AND (last_at < $1 OR id <= $2)", at, id)
}

// deleteChunks deletes the chunks cond selects, oldest first, with
// their key rows, a transaction per defaultActivityDeleteChunk entries
// or so, until none is left or ctx ends; it returns how many entries
// went.
func (db *DB) deleteChunks(ctx context.Context, op, cond string, args ...any) (int, error) {
	per := defaultActivityDeleteChunk
	if db.activityDeleteChunk > 0 {
		per = db.activityDeleteChunk
	}
	per = max(1, per/maxChunkEntries)
	query := "DELETE FROM activity_chunks WHERE id IN (SELECT id FROM activity_chunks WHERE " + cond +
		" ORDER BY last_at, id LIMIT " + strconv.Itoa(per) + ") RETURNING id, entries"
	total := 0
	for {
		chunks := 0
		err := db.write(ctx, op, func(t *txn) error {
			ids, n, err := deletedChunks(ctx, t, query, args...)
			if err != nil {
				return err
			}
			chunks, total = len(ids), total+n
			return deleteKeys(ctx, t, ids)
		})
		if err != nil || chunks < per {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, db.wrap(op, err)
		}
	}
}

// deletedChunks runs a DELETE ... RETURNING id, entries and returns the
// ids and the sum of the entries.
func deletedChunks(ctx context.Context, t *txn, query string, args ...any) ([]string, int, error) {
	rows, err := t.query(ctx, query, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var ids []string
	total := 0
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, 0, err
		}
		ids, total = append(ids, id), total+n
	}
	return ids, total, rows.Err()
}

// deleteKeys deletes the key rows of the chunks ids.
func deleteKeys(ctx context.Context, t *txn, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	var q where
	marks := make([]string, len(ids))
	for i, id := range ids {
		marks[i] = q.arg(id)
	}
	_, err := t.exec(ctx, "DELETE FROM activity_keys WHERE chunk IN ("+strings.Join(marks, ", ")+")", q.args...)
	return err
}

// trimStraddlers writes again, without their entries older than cut,
// the chunks that hold entries on both sides of it (one transaction
// each; they are few: such a chunk ends within maxChunkSpan of cut),
// and returns how many entries went.
func (db *DB) trimStraddlers(ctx context.Context, op string, cut int64) (int, error) {
	var ids []string
	rows, err := db.query(ctx, "SELECT id FROM activity_chunks WHERE last_at >= $1 AND last_at <= $2 AND first_at < $1",
		cut, addNanos(cut, int64(maxChunkSpan)))
	if err != nil {
		return 0, db.wrap(op, err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, db.wrap(op, err)
		}
		ids = append(ids, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, db.wrap(op, err)
	}
	total := 0
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return total, db.wrap(op, err)
		}
		gone := 0
		err := db.write(ctx, op, func(t *txn) error {
			// Read again under the transaction's lock: another broker
			// may have trimmed it since.
			var data []byte
			err := t.queryRow(ctx, "SELECT data FROM activity_chunks WHERE id = $1 AND first_at < $2"+db.dialect.forUpdate,
				id, cut).Scan(&data)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			entries, _, err := decodeChunk(data, allEntries, nil)
			if err != nil {
				return err
			}
			var kept []*ActivityRow
			for i := range entries {
				if entries[i].At.UnixNano() >= cut {
					kept = append(kept, &entries[i])
				}
			}
			if _, err := t.exec(ctx, "DELETE FROM activity_chunks WHERE id = $1", id); err != nil {
				return err
			}
			if err := deleteKeys(ctx, t, []string{id}); err != nil {
				return err
			}
			gone = len(entries) - len(kept)
			if len(kept) == 0 {
				return nil
			}
			// The same id: the chunk keeps its place in the walk's order.
			c := newChunk(kept, &chunkEncoder{}, &keyBuilder{})
			c.id = id
			return insertChunks(ctx, t, []chunkRow{c})
		})
		if err != nil {
			return total, err
		}
		total += gone
	}
	return total, nil
}
