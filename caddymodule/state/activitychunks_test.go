package state

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

// randomActivityRows are n entries of a few brokers' batches: times on
// a coarse grid (so that many are equal, within and across brokers),
// fields from small sets (so that filters select some), unique ids of
// both forms the codec knows.
func randomActivityRows(rng *rand.Rand, t0 time.Time, n int, spread time.Duration) []ActivityRow {
	pick := func(vals ...string) string { return vals[rng.IntN(len(vals))] }
	out := make([]ActivityRow, n)
	for i := range out {
		at := t0.Add(time.Duration(rng.Int64N(int64(spread/(50*time.Millisecond)))) * 50 * time.Millisecond)
		var id string
		if rng.IntN(4) == 0 {
			id = fmt.Sprintf("e%05d", i) // not an activity.NewID
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(rng.UintN(256))
			}
			b[0], b[1] = byte(i>>8), byte(i) // unique
			id = activityIDPrefix + hex.EncodeToString(b[:])
		}
		r := ActivityRow{ID: id, At: at, Instance: pick("i1", "i2", "i3"), Session: pick("", "s1", "s2", "s3"),
			Agent: pick("", "ci", "dev"), Service: pick("", "github", "npm"), Method: pick("GET", "POST", "CONNECT"),
			Host: pick("api.github.com", "registry.npmjs.org", "evil.example"), Port: 443, Path: pick("/", "/user", "/a/b"),
			Status: []int{0, 200, 403, 404}[rng.IntN(4)], Decision: pick("forwarded", "refused", "failed"),
			Code: pick("", "", "uncovered_host", "session_expired"), Reason: pick("", "no service covers it"),
			BytesIn: rng.Int64N(1 << 20), BytesOut: rng.Int64N(1 << 30), Duration: time.Duration(rng.Int64N(int64(time.Minute))),
			Credentials: []string{}, Client: pick("127.0.0.1", "::1")}
		for range rng.IntN(3) {
			r.Credentials = append(r.Credentials, pick("GITHUB_TOKEN", "NPM_TOKEN", "X"))
		}
		out[i] = r
	}
	return out
}

// referenceActivity is ListActivity by brute force over every entry.
func referenceActivity(all []ActivityRow, f ActivityFilter) []ActivityRow {
	out := selectActivity(all, f)
	return out[:min(len(out), pageLimit(f.Limit))]
}

// selectActivity is every entry of all that f selects (but its Limit),
// in f's order.
func selectActivity(all []ActivityRow, f ActivityFilter) []ActivityRow {
	var out []ActivityRow
	for _, r := range all {
		switch {
		case f.Session != "" && r.Session != f.Session, f.Agent != "" && r.Agent != f.Agent,
			f.Service != "" && r.Service != f.Service, f.Host != "" && r.Host != f.Host,
			f.Decision != "" && r.Decision != f.Decision, f.Code != "" && r.Code != f.Code,
			f.Status != 0 && r.Status != f.Status, !f.Since.IsZero() && r.At.Before(f.Since),
			f.Before != nil && compareActivity(&r, &ActivityRow{At: f.Before.At, ID: f.Before.ID}) >= 0,
			f.After != nil && compareActivity(&r, &ActivityRow{At: f.After.At, ID: f.After.ID}) <= 0:
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b ActivityRow) int {
		if f.After != nil {
			return compareActivity(&a, &b)
		}
		return compareActivity(&b, &a)
	})
	return out
}

// ListActivity agrees with a brute-force reference on random entries
// of several brokers (overlapping in time, batches retried whole),
// random filters, cursors and limits, and paging both ways visits each
// entry once; and after retention by age, exactly the entries at or
// after the cut are left.
func TestActivityListProperty(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		rng := rand.New(rand.NewPCG(11, uint64(len(b.name))))
		db := open(t, b.config(t))
		t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		all := randomActivityRows(rng, t0, 3000, 20*time.Second)
		// Batches of 1 to 300 entries, each a few brokers' mix, some
		// written twice (a retry after a commit).
		for rest := all; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(300))
			batch := slices.Clone(rest[:n])
			rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			must(t, db.InsertActivity(ctx, batch))
			if rng.IntN(4) == 0 {
				must(t, db.InsertActivity(ctx, batch))
			}
			rest = rest[n:]
		}
		filters := func() ActivityFilter {
			var f ActivityFilter
			pick := func(vals ...string) string { return vals[rng.IntN(len(vals))] }
			for range rng.IntN(3) {
				switch rng.IntN(7) {
				case 0:
					f.Session = pick("s1", "s2", "nobody")
				case 1:
					f.Agent = pick("ci", "dev")
				case 2:
					f.Service = pick("github", "npm")
				case 3:
					f.Host = pick("api.github.com", "evil.example")
				case 4:
					f.Decision = pick("refused", "forwarded")
				case 5:
					f.Code = pick("uncovered_host", "session_expired")
				case 6:
					f.Status = []int{200, 403, 404}[rng.IntN(3)]
				}
			}
			if rng.IntN(4) == 0 {
				f.Since = t0.Add(time.Duration(rng.Int64N(int64(20 * time.Second))))
			}
			f.Limit = []int{0, 1, 7, 64, 100, 5000}[rng.IntN(6)]
			return f
		}
		cursor := func() *Cursor {
			if rng.IntN(2) == 0 {
				r := all[rng.IntN(len(all))]
				return &Cursor{At: r.At, ID: r.ID}
			}
			return &Cursor{At: t0.Add(time.Duration(rng.Int64N(int64(21*time.Second))) - time.Second)}
		}
		check := func(f ActivityFilter, ref []ActivityRow) {
			t.Helper()
			got, err := db.ListActivity(ctx, f)
			must(t, err)
			want := referenceActivity(ref, f)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("ListActivity(%+v): %d entries, want %d\n got %v\nwant %v", f, len(got), len(want), ids(got), ids(want))
			}
		}
		for range 150 {
			f := filters()
			switch rng.IntN(3) {
			case 1:
				f.Before = cursor()
			case 2:
				f.After = cursor()
			}
			check(f, all)
		}
		// Paging both ways from the ends.
		for range 6 {
			f := filters()
			f.Limit = []int{1, 7, 100}[rng.IntN(3)]
			for _, asc := range []bool{false, true} {
				f.Before, f.After = nil, nil
				if asc {
					f.After = &Cursor{At: t0.Add(-time.Second)}
				}
				want := selectActivity(all, f)
				var got []ActivityRow
				for {
					page, err := db.ListActivity(ctx, f)
					must(t, err)
					got = append(got, page...)
					if len(page) < f.Limit {
						break
					}
					c := &Cursor{At: page[len(page)-1].At, ID: page[len(page)-1].ID}
					if asc {
						f.After = c
					} else {
						f.Before = c
					}
				}
				if !reflect.DeepEqual(ids(got), ids(want)) {
					t.Fatalf("paging %+v (ascending %v): %d entries, want %d", f, asc, len(got), len(want))
				}
			}
		}
		// Retention by age is exact, also within the chunks it cuts.
		cut := t0.Add(time.Duration(rng.Int64N(int64(20*time.Second))) + 25*time.Millisecond)
		n, err := db.DeleteActivityBefore(ctx, cut)
		must(t, err)
		var left []ActivityRow
		for _, r := range all {
			if !r.At.Before(cut) {
				left = append(left, r)
			}
		}
		if n != len(all)-len(left) {
			t.Fatalf("DeleteActivityBefore removed %d, want %d", n, len(all)-len(left))
		}
		for range 50 {
			f := filters()
			if rng.IntN(2) == 0 {
				f.Before = cursor()
			}
			check(f, left)
		}
		// Retention by count keeps whole chunks: keep to keep+63.
		n, err = db.TrimActivity(ctx, 500)
		must(t, err)
		if kept := len(left) - n; kept < 500 || kept >= 500+maxChunkEntries {
			t.Fatalf("TrimActivity(500) kept %d", kept)
		}
	})
}

func ids(rows []ActivityRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

// sortedChunk sorts rows by (At, ID) as InsertActivity does, as
// pointers for the encoder.
func sortedChunk(rows []ActivityRow) []*ActivityRow {
	out := make([]*ActivityRow, len(rows))
	for i := range rows {
		out[i] = &rows[i]
	}
	slices.SortFunc(out, compareActivity)
	return out
}

// A chunk decodes to the entries encoded, whatever their strings and
// numbers; a filter and the bits of a read select what they name; the
// encoding is much smaller than the entries' JSON.
func TestActivityChunkRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var enc chunkEncoder
	for round := range 200 {
		rows := randomActivityRows(rng, t0, 1+rng.IntN(maxChunkEntries), time.Second)
		if round%10 == 0 { // the edges of every field
			rows[0].ID, rows[0].Path, rows[0].Reason = "ACT_x\x00é", "", "\xff"
			rows[0].Port, rows[0].Status, rows[0].BytesIn, rows[0].BytesOut = -1, math.MaxInt32, math.MinInt64, math.MaxInt64
			rows[0].Duration, rows[0].Credentials = -time.Nanosecond, nil
		}
		if round%10 == 1 {
			for i := range rows {
				rows[i].At = time.Unix(0, math.MinInt64+int64(i)) // the storable range's edge
			}
		}
		chunk := sortedChunk(rows)
		data := enc.encode(chunk)
		got, sum, err := decodeChunk(data, allEntries, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want []ActivityRow
		for _, r := range chunk {
			w := *r
			w.At = w.At.UTC()
			if w.Credentials == nil {
				w.Credentials = []string{}
			}
			want = append(want, w)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: decoded\n%+v\nwant\n%+v", round, got, want)
		}
		if sum != (chunkSummary{entries: len(chunk), first: chunk[0].At.UnixNano(), last: chunk[len(chunk)-1].At.UnixNano()}) {
			t.Fatalf("summary %+v", sum)
		}
		if asJSON, _ := json.Marshal(want); len(chunk) > 8 && len(data) > len(asJSON)/4 {
			t.Errorf("%d entries in %d bytes, more than a quarter of their JSON's %d", len(chunk), len(data), len(asJSON))
		}
		only, _, err := decodeChunk(data, allEntries, func(e *entryFields) bool { return e.Session == "s1" && e.Status == 403 })
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range only {
			if r.Session != "s1" || r.Status != 403 {
				t.Fatalf("the filter let %+v through", r)
			}
		}
		if n := len(referenceActivity(want, ActivityFilter{Session: "s1", Status: 403, Limit: MaxPageLimit})); n != len(only) {
			t.Fatalf("the filter kept %d of %d", len(only), n)
		}
		// The bits a read asks for: those entries, and only them.
		bits := rng.Uint64()
		some, _, err := decodeChunk(data, bits, nil)
		if err != nil {
			t.Fatal(err)
		}
		var picked []ActivityRow
		for i := range want {
			if bits&(1<<i) != 0 {
				picked = append(picked, want[i])
			}
		}
		if !reflect.DeepEqual(some, picked) {
			t.Fatalf("bits %x: %d entries, want %d", bits, len(some), len(picked))
		}
	}
}

// Malformed chunks are errors: every truncation of a valid one, a
// version, id form or string index out of range, entries out of order,
// an ID stored in the wrong form.
func TestActivityChunkDecodeRefuses(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := randomActivityRows(rand.New(rand.NewPCG(3, 4)), t0, 20, time.Second)
	var enc chunkEncoder
	data := enc.encode(sortedChunk(rows))
	for i := range data {
		if _, _, err := decodeChunk(data[:i], allEntries, nil); err == nil {
			t.Fatalf("a chunk cut at %d of %d decodes", i, len(data))
		}
	}
	if _, _, err := decodeChunk(append(slices.Clone(data), 0), allEntries, nil); err == nil {
		t.Fatal("trailing bytes decode")
	}
	bad := slices.Clone(data)
	bad[0] = 2
	if _, _, err := decodeChunk(bad, allEntries, nil); err == nil {
		t.Fatal("version 2 decodes")
	}
	one := func(id string, at time.Time) []*ActivityRow {
		return []*ActivityRow{{ID: id, At: at, Credentials: []string{"c"}}}
	}
	// Two entries in the wrong order, by hand: the encoder sorts.
	two := enc.encode(append(one("b", t0), one("a", t0)...))
	if _, _, err := decodeChunk(two, allEntries, nil); err == nil {
		t.Fatal("entries out of order decode")
	}
	same := enc.encode(append(one("a", t0), one("a", t0)...))
	if _, _, err := decodeChunk(same, allEntries, nil); err == nil {
		t.Fatal("an entry twice decodes")
	}
	// "act_" and 32 hex digits as a plain string: its other form.
	id := activityIDPrefix + "0123456789abcdef0123456789abcdef"
	plain := enc.encode(one("x"+id[1:], t0))
	plain[slices.Index(plain, 'x')] = 'a'
	if _, _, err := decodeChunk(plain, allEntries, nil); err == nil {
		t.Fatal("an activity id in the string form decodes")
	}
	// The last string index (the credential) past the table.
	idx := enc.encode(one("a", t0))
	idx[len(idx)-1] = 0x7f
	if _, _, err := decodeChunk(idx, allEntries, nil); err == nil {
		t.Fatal("a string index past the table decodes")
	}
}

// FuzzActivityChunkDecode: any bytes are an error or entries that
// encode and decode to the same entries.
func FuzzActivityChunkDecode(f *testing.F) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(5, 6))
	var enc chunkEncoder
	for _, n := range []int{1, 2, 64} {
		f.Add(enc.encode(sortedChunk(randomActivityRows(rng, t0, n, time.Second))))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, sum, err := decodeChunk(data, allEntries, nil)
		if err != nil {
			return
		}
		if len(rows) != sum.entries || sum.entries < 1 || sum.entries > maxChunkEntries {
			t.Fatalf("%d rows, summary %+v", len(rows), sum)
		}
		again, sum2, err := decodeChunk(enc.encode(sortedChunk(rows)), allEntries, nil)
		if err != nil || !reflect.DeepEqual(again, rows) || sum2 != sum {
			t.Fatalf("re-encoded: %v\n%+v\nwant\n%+v", err, again, rows)
		}
	})
}
