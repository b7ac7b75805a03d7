package state

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// ListActivity returns the entries f selects, newest first by (at, id)
// (oldest first with After), at most f's clamped Limit of them. Paging
// with Before set to the last entry returned visits every entry exactly
// once.
//
// It walks the chunks in the order of their last entry (newest last
// entry first, or oldest with After): all of them, or with filters the
// chunks a filter's key rows name (the other filters' rows of the same
// chunk joined, their bits ANDed), a few at a time; decodes the
// entries that match and merges them into the page. Chunks of brokers
// that wrote at the same time overlap, so the walk stops only when the
// page is full and no chunk further on can hold an entry that belongs
// in it: newest first, when the next chunk's last entry is older than
// the page's oldest; oldest first, when it is more than maxChunkSpan
// newer than the page's newest (its first entry can be that much older
// than its last).
//
// The walk reads in one read-only transaction, a snapshot: the bits of
// the key rows it reads first describe the chunks it reads next (a
// purge that rewrote a chunk in between would shift them). On
// PostgreSQL the transaction also turns sorting off: every query of a
// walk reads an index in its order, but until the tables have
// statistics (autovacuum's first ANALYZE) the planner guesses a
// value's key rows are few and would rather read all of them and sort
// (a hundred times slower at a million entries).
func (db *DB) ListActivity(ctx context.Context, f ActivityFilter) ([]ActivityRow, error) {
	const op = "list activity"
	w := newActivityWalk(f)
	opts := &sql.TxOptions{ReadOnly: true}
	if db.pg {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.sql.BeginTx(ctx, opts)
	if err != nil {
		return nil, db.wrap(op, err)
	}
	defer func() { _ = tx.Rollback() }() // it changed nothing
	if db.pg {
		if _, err := tx.ExecContext(ctx, "SET LOCAL enable_sort = off"); err != nil {
			return nil, db.wrap(op, err)
		}
	}
	if err := db.walkActivity(ctx, tx, w); err != nil {
		return nil, db.wrap(op, err)
	}
	var out []ActivityRow
	for _, r := range w.page {
		out = append(out, *r)
	}
	return out, nil
}

// chunkRef is a chunk a walk may read: its id, its first and last
// entry's at and which of its entries may match (bit i: entry i).
type chunkRef struct {
	id          string
	first, last int64
	bits        uint64
}

// Bounds of a walk: how many chunk refs it asks for at first (with
// filters; without, those that would fill the page and a few more),
// at least and at most at a time, and how many chunks it reads at
// once.
const (
	walkRefsFirst    = 32
	walkRefsMin      = 16
	walkRefsMax      = 1024
	walkRefsUnfilter = 2
	walkFetchChunks  = 128
)

// activityWalk is one ListActivity: the filter in the forms the walk
// uses, and the page so far, sorted in the page's order (pointers:
// sorting would copy the rows at every step).
type activityWalk struct {
	f     ActivityFilter
	limit int
	asc   bool
	keys  [][2]string // the filters' key rows (field, value), the walked one first
	// lo and hi bound the chunks' last_at; firstMax their first_at
	// (none: MaxInt64).
	lo, hi, firstMax int64
	since            int64 // none: MinInt64
	before, after    *nanoCursor
	page             []*ActivityRow
}

// nanoCursor is a Cursor with its time in unix nanoseconds.
type nanoCursor struct {
	at int64
	id string
}

func newActivityWalk(f ActivityFilter) *activityWalk {
	w := &activityWalk{f: f, limit: pageLimit(f.Limit), asc: f.After != nil, lo: math.MinInt64, hi: math.MaxInt64,
		firstMax: math.MaxInt64, since: math.MinInt64}
	probe := ActivityRow{Session: f.Session, Agent: f.Agent, Service: f.Service, Host: f.Host, Decision: f.Decision, Code: f.Code}
	for _, kv := range keyFields(&probe, statusKey(f.Status)) {
		if kv[1] != "" {
			w.keys = append(w.keys, kv)
		}
	}
	if !f.Since.IsZero() {
		w.since = boundNanos(f.Since)
		w.lo = w.since // a chunk whose last entry is older holds none
	}
	if f.Before != nil {
		w.before = &nanoCursor{boundNanos(f.Before.At), f.Before.ID}
		// A chunk holding an entry before the cursor starts at or
		// before it, so it ends at most maxChunkSpan after it.
		w.firstMax, w.hi = w.before.at, addNanos(w.before.at, int64(maxChunkSpan))
	}
	if f.After != nil {
		w.after = &nanoCursor{boundNanos(f.After.At), f.After.ID}
		w.lo = max(w.lo, w.after.at)
	}
	return w
}

// addNanos is a+b (b >= 0), at most MaxInt64.
func addNanos(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func (w *activityWalk) full() bool { return len(w.page) >= w.limit }

// worst is the page's last entry's at, when the page is full.
func (w *activityWalk) worst() int64 { return w.page[len(w.page)-1].At.UnixNano() }

// beyond reports, of a full page, that ref and every chunk after it in
// the walk's order hold no entry that belongs in the page.
func (w *activityWalk) beyond(ref chunkRef) bool {
	if w.asc {
		return ref.last > addNanos(w.worst(), int64(maxChunkSpan))
	}
	return ref.last < w.worst()
}

// skip reports, of a full page, that ref holds no entry for it (though
// chunks after it may).
func (w *activityWalk) skip(ref chunkRef) bool {
	return w.asc && ref.first > w.worst()
}

// walkActivity fills w.page (see ListActivity).
func (db *DB) walkActivity(ctx context.Context, tx *sql.Tx, w *activityWalk) error {
	ask := walkRefsFirst
	if len(w.keys) == 0 {
		ask = (w.limit+maxChunkEntries-1)/maxChunkEntries + walkRefsUnfilter
	}
	var pending []chunkRef
	expect := 0 // entries the pending chunks may add
	flush := func() error {
		err := db.readChunks(ctx, tx, w, pending)
		pending, expect = pending[:0], 0
		return err
	}
	var from *chunkRef
	seen := 0 // refs read
	for {
		refs, err := db.chunkRefs(ctx, tx, w, from, ask)
		if err != nil {
			return err
		}
		for _, ref := range refs {
			if w.full() && w.beyond(ref) {
				return flush() // which can only make the page's last entry better
			}
			if w.full() && w.skip(ref) {
				continue
			}
			pending = append(pending, ref)
			expect += bits.OnesCount64(ref.bits)
			if len(pending) >= walkFetchChunks || !w.full() && len(w.page)+expect >= w.limit {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		// Read what is pending before the next refs are checked
		// against the page.
		if err := flush(); err != nil || len(refs) < ask {
			return err
		}
		from = &refs[len(refs)-1]
		seen += len(refs)
		ask = w.nextAsk(seen, ask)
	}
}

// nextAsk is how many refs to ask for after seen of them (the last
// ask was last): as many as the page's entries per ref so far say
// would fill it, and a quarter more; twice the last while none has
// given an entry; a few at a time once the page is full (the next few
// usually end the walk).
func (w *activityWalk) nextAsk(seen, last int) int {
	n := 2 * last
	switch {
	case w.full():
		n = walkRefsMin
	case len(w.page) > 0:
		n = (w.limit - len(w.page)) * seen / len(w.page) * 5 / 4
	}
	return min(max(n, walkRefsMin), walkRefsMax)
}

// chunkRefs returns up to n chunk refs of the walk after from (nil:
// from the start), in the walk's order.
func (db *DB) chunkRefs(ctx context.Context, tx *sql.Tx, w *activityWalk, from *chunkRef, n int) ([]chunkRef, error) {
	var q where
	var sel, table, last, id, first string
	if len(w.keys) == 0 {
		sel, table = "id, first_at, last_at, entries", "activity_chunks"
		last, id, first = "last_at", "id", "first_at"
	} else {
		// The other filters' rows of the same chunk, by their primary
		// key; CROSS JOIN keeps SQLite walking k0 (PostgreSQL plans
		// it as a join all the same).
		bitsAnd := []string{"k0.bits"}
		var b strings.Builder
		b.WriteString("activity_keys k0")
		for i, kv := range w.keys {
			k := "k" + strconv.Itoa(i)
			q.conds = append(q.conds, k+".field = "+q.arg(kv[0]), k+".value = "+q.arg(kv[1]))
			if i > 0 {
				b.WriteString(" CROSS JOIN activity_keys " + k)
				q.conds = append(q.conds, k+".last_at = k0.last_at", k+".chunk = k0.chunk")
				bitsAnd = append(bitsAnd, k+".bits")
			}
		}
		and := strings.Join(bitsAnd, " & ")
		if len(bitsAnd) > 1 {
			q.conds = append(q.conds, "("+and+") <> 0")
		}
		sel, table = "k0.chunk, k0.first_at, k0.last_at, "+and, b.String()
		last, id, first = "k0.last_at", "k0.chunk", "k0.first_at"
	}
	lo, hi := w.lo, w.hi
	if from != nil {
		// On from where the last ask ended: after it in (last, id).
		cmp := "<"
		if w.asc {
			cmp, lo = ">", max(lo, from.last)
		} else {
			hi = min(hi, from.last)
		}
		at := q.arg(from.last)
		q.conds = append(q.conds, "("+last+" "+cmp+" "+at+" OR "+last+" = "+at+" AND "+id+" "+cmp+" "+q.arg(from.id)+")")
	}
	if lo != math.MinInt64 {
		q.conds = append(q.conds, last+" >= "+q.arg(lo))
	}
	if hi != math.MaxInt64 {
		q.conds = append(q.conds, last+" <= "+q.arg(hi))
	}
	if w.firstMax != math.MaxInt64 {
		q.conds = append(q.conds, first+" <= "+q.arg(w.firstMax))
	}
	order := " ORDER BY " + last + " DESC, " + id + " DESC"
	if w.asc {
		order = " ORDER BY " + last + ", " + id
	}
	qs := "SELECT " + sel + " FROM " + table + q.sql() + order + " LIMIT " + strconv.Itoa(n)
	rows, err := tx.QueryContext(ctx, db.q(qs), q.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]chunkRef, 0, n)
	for rows.Next() {
		var r chunkRef
		var b int64
		if err := rows.Scan(&r.id, &r.first, &r.last, &b); err != nil {
			return nil, err
		}
		r.bits = uint64(b)
		if len(w.keys) == 0 { // the number of entries: all may match
			r.bits = 1<<min(uint64(b), maxChunkEntries) - 1
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// readChunks reads the chunks refs name and merges their entries that
// the walk selects into its page. A chunk gone since (purged) has no
// entries left to show.
func (db *DB) readChunks(ctx context.Context, tx *sql.Tx, w *activityWalk, refs []chunkRef) error {
	if len(refs) == 0 {
		return nil
	}
	var q where
	marks := make([]string, len(refs))
	want := make(map[string]uint64, len(refs))
	for i, r := range refs {
		marks[i] = q.arg(r.id)
		want[r.id] = r.bits
	}
	qs := "SELECT id, first_at, last_at, entries, data FROM activity_chunks WHERE id IN (" + strings.Join(marks, ", ") + ")"
	rows, err := tx.QueryContext(ctx, db.q(qs), q.args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	match := w.match()
	for rows.Next() {
		var id string
		var first, last int64
		var entries int
		var data []byte
		if err := rows.Scan(&id, &first, &last, &entries, &data); err != nil {
			return err
		}
		// The bits skip the entries no key row selects; match checks
		// the rest (a filter's every field, its times).
		got, sum, err := decodeChunk(data, want[id], match)
		if err == nil && sum != (chunkSummary{entries: entries, first: first, last: last}) {
			err = fmt.Errorf("%w: its entries disagree with its row", errChunk)
		}
		if err != nil {
			return err
		}
		for i := range got {
			if w.inWindow(&got[i]) {
				w.page = append(w.page, &got[i])
			}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	slices.SortFunc(w.page, func(a, b *ActivityRow) int {
		if w.asc {
			return compareActivity(a, b)
		}
		return compareActivity(b, a)
	})
	if len(w.page) > w.limit {
		clear(w.page[w.limit:]) // let the rows' strings go
		w.page = w.page[:w.limit]
	}
	return nil
}

// match is the decode's filter: every field the filter sets, and the
// time bounds; the cursors' IDs are inWindow's.
func (w *activityWalk) match() chunkMatch {
	f := w.f
	return func(e *entryFields) bool {
		switch {
		case f.Session != "" && e.Session != f.Session, f.Agent != "" && e.Agent != f.Agent,
			f.Service != "" && e.Service != f.Service, f.Host != "" && e.Host != f.Host,
			f.Decision != "" && e.Decision != f.Decision, f.Code != "" && e.Code != f.Code,
			f.Status != 0 && e.Status != f.Status, e.At < w.since,
			w.before != nil && e.At > w.before.at, w.after != nil && e.At < w.after.at:
			return false
		}
		return true
	}
}

// inWindow reports that r is strictly between the cursors.
func (w *activityWalk) inWindow(r *ActivityRow) bool {
	at := r.At.UnixNano()
	if b := w.before; b != nil && (at > b.at || at == b.at && r.ID >= b.id) {
		return false
	}
	if a := w.after; a != nil && (at < a.at || at == a.at && r.ID <= a.id) {
		return false
	}
	return true
}
