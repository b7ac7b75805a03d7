package state

import (
	"context"
	"errors"
	"slices"
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

// The chunks of the activity log (migration 0004): InsertActivity
// stores a batch as chunks of at most maxChunkEntries entries, sorted
// by (At, ID), each spanning at most maxChunkSpan from its first entry
// to its last. Pages walk chunks by their last entry and stop once no
// further chunk can hold an entry of the page: the bound on the span
// is what tells how far that is. A batch spans about the Recorder's
// batch wait (200 ms), so a second rarely splits one; a longer span
// would make every page read further.
const (
	maxChunkEntries = 64 // the bits of a key row
	maxChunkSpan    = time.Second
)

// Names of the filterable fields in activity_keys.field, in the order a
// filtered page prefers to walk them: the one that usually selects the
// fewest entries first.
const (
	keySession  = "session"
	keyHost     = "host"
	keyAgent    = "agent"
	keyService  = "service"
	keyCode     = "code"
	keyStatus   = "status"
	keyDecision = "decision"
)

// keyFields are the filterable fields of an entry (or of a filter, as
// newActivityWalk makes it one), in that order; "" is no value (no key
// row).
func keyFields(r *ActivityRow, status string) [7][2]string {
	return [7][2]string{{keySession, r.Session}, {keyHost, r.Host}, {keyAgent, r.Agent}, {keyService, r.Service},
		{keyCode, r.Code}, {keyStatus, status}, {keyDecision, r.Decision}}
}

// statusKey is a status's key value; 0 is none.
func statusKey(status int) string {
	if status == 0 {
		return ""
	}
	return strconv.Itoa(status)
}

// compareActivity orders entries by (At, ID).
func compareActivity(a, b *ActivityRow) int {
	if c := a.At.Compare(b.At); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// chunkRow is a chunk as InsertActivity writes it, with its key rows.
type chunkRow struct {
	id          string
	first, last int64
	entries     int
	data        []byte
	keys        []chunkKey
}

// chunkKey is one key row of a chunk.
type chunkKey struct {
	field, value string
	bits         uint64
}

// InsertActivity stores entries in one transaction, as chunks (see
// maxChunkEntries) split from the batch sorted by (At, ID), the same
// ones for the same batch: a chunk whose id (its first entry's) is
// stored already is skipped, so a batch retried as a whole (one that
// did commit) is stored once. Entries with the same At and ID are
// stored once; IDs are otherwise unique (activity.NewID's), or a chunk
// that starts with a stored ID is taken for stored.
func (db *DB) InsertActivity(ctx context.Context, rows []ActivityRow) error {
	const op = "insert activity"
	if len(rows) == 0 {
		return nil
	}
	for i := range rows {
		if rows[i].ID == "" {
			return db.wrap(op, errors.New("an activity entry needs an id"))
		}
		if _, err := storedNanos("at", rows[i].At); err != nil {
			return db.wrap(op, err)
		}
	}
	chunks := makeChunks(rows)
	return db.write(ctx, op, func(t *txn) error { return insertChunks(ctx, t, chunks) })
}

// makeChunks sorts a copy of rows, drops repeated (At, ID)s and splits
// it into chunks, encoded, with their key rows.
func makeChunks(rows []ActivityRow) []chunkRow {
	// Pointers: sorting 250-byte rows would copy them at every step.
	sorted := make([]*ActivityRow, len(rows))
	for i := range rows {
		sorted[i] = &rows[i]
	}
	slices.SortStableFunc(sorted, compareActivity)
	sorted = slices.CompactFunc(sorted, func(a, b *ActivityRow) bool { return compareActivity(a, b) == 0 })
	var enc chunkEncoder
	var keys keyBuilder
	var out []chunkRow
	for len(sorted) > 0 {
		n := 1
		first := sorted[0].At
		for n < len(sorted) && n < maxChunkEntries && sorted[n].At.Sub(first) <= maxChunkSpan {
			n++
		}
		out = append(out, newChunk(sorted[:n], &enc, &keys))
		sorted = sorted[n:]
	}
	return out
}

// newChunk is the chunk of rows (sorted, 1..maxChunkEntries of them,
// within maxChunkSpan), named by its first entry's id.
func newChunk(rows []*ActivityRow, enc *chunkEncoder, keys *keyBuilder) chunkRow {
	return chunkRow{id: rows[0].ID, first: rows[0].At.UnixNano(), last: rows[len(rows)-1].At.UnixNano(),
		entries: len(rows), data: enc.encode(rows), keys: keys.build(rows)}
}

// insertChunks inserts chunks and their key rows, but not a chunk whose
// id is stored already, nor its keys.
func insertChunks(ctx context.Context, t *txn, chunks []chunkRow) error {
	if t.db.pg {
		return insertChunksPostgres(ctx, t, chunks)
	}
	return insertChunksSQLite(ctx, t, chunks)
}

// keyBuilder collects a chunk's key rows; its map is reused from one
// chunk to the next.
type keyBuilder struct {
	index map[[2]string]int
}

// build returns the key rows of a chunk's entries.
func (k *keyBuilder) build(rows []*ActivityRow) []chunkKey {
	if k.index == nil {
		k.index = make(map[[2]string]int, 64)
	}
	clear(k.index)
	var out []chunkKey
	var last [7]int // the previous entry's key row of each field, -1: none
	for f := range last {
		last[f] = -1
	}
	status, statusOf := "", 0
	for i := range rows {
		r := rows[i]
		if r.Status != statusOf || i == 0 {
			status, statusOf = statusKey(r.Status), r.Status
		}
		for f, kv := range keyFields(r, status) {
			if kv[1] == "" {
				continue
			}
			// Most fields repeat the previous entry's: no map lookup.
			j := last[f]
			if j < 0 || out[j].value != kv[1] {
				var ok bool
				if j, ok = k.index[kv]; !ok {
					j = len(out)
					k.index[kv] = j
					out = append(out, chunkKey{field: kv[0], value: kv[1]})
				}
				last[f] = j
			}
			out[j].bits |= 1 << i
		}
	}
	return out
}

// insertChunksSQLite inserts each chunk and its keys with a statement
// per row, prepared once: SQLite runs in process, so a row costs no
// round trip (a multi-row INSERT of the keys measured slower per row).
func insertChunksSQLite(ctx context.Context, t *txn, chunks []chunkRow) error {
	chunkStmt, err := t.tx.PrepareContext(ctx, t.db.q(`INSERT INTO activity_chunks (id, first_at, last_at, entries, data)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING`))
	if err != nil {
		return err
	}
	defer chunkStmt.Close()
	keyStmt, err := t.tx.PrepareContext(ctx, t.db.q(`INSERT INTO activity_keys (field, value, last_at, chunk, first_at, bits)
VALUES ($1, $2, $3, $4, $5, $6)`))
	if err != nil {
		return err
	}
	defer keyStmt.Close()
	for _, c := range chunks {
		r, err := chunkStmt.ExecContext(ctx, c.id, c.first, c.last, c.entries, c.data)
		if err != nil {
			return err
		}
		n, err := affected(r)
		if err != nil {
			return err
		}
		if n == 0 {
			continue // stored already, and its keys with it
		}
		for _, k := range c.keys {
			if _, err := keyStmt.ExecContext(ctx, k.field, k.value, c.last, c.id, c.first, int64(k.bits)); err != nil {
				return err
			}
		}
	}
	return nil
}

// insertChunksPostgres inserts the chunks in one statement and the
// keys of those it inserted (not stored already) in another: two round
// trips a batch, the rows passed as arrays.
func insertChunksPostgres(ctx context.Context, t *txn, chunks []chunkRow) error {
	ids, firsts, lasts, entries, data := make([]string, len(chunks)), make([]int64, len(chunks)),
		make([]int64, len(chunks)), make([]int64, len(chunks)), make([][]byte, len(chunks))
	for i, c := range chunks {
		ids[i], firsts[i], lasts[i], entries[i], data[i] = c.id, c.first, c.last, int64(c.entries), c.data
	}
	rows, err := t.query(ctx, `INSERT INTO activity_chunks (id, first_at, last_at, entries, data)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[], $5::bytea[])
ON CONFLICT (id) DO NOTHING RETURNING id`, ids, firsts, lasts, entries, data)
	if err != nil {
		return err
	}
	inserted := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		inserted[id] = true
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	var fields, values, chunkIDs []string
	var keyLasts, keyFirsts, bits []int64
	for _, c := range chunks {
		if !inserted[c.id] {
			continue
		}
		for _, k := range c.keys {
			fields, values, chunkIDs = append(fields, k.field), append(values, k.value), append(chunkIDs, c.id)
			keyLasts, keyFirsts, bits = append(keyLasts, c.last), append(keyFirsts, c.first), append(bits, int64(k.bits))
		}
	}
	if len(fields) == 0 {
		return nil
	}
	_, err = t.exec(ctx, `INSERT INTO activity_keys (field, value, last_at, chunk, first_at, bits)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[])`,
		fields, values, keyLasts, chunkIDs, keyFirsts, bits)
	return err
}
