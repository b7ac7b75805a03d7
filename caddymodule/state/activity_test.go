package state

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func activityRow(id string, at time.Time) ActivityRow {
	return ActivityRow{ID: id, At: at, Instance: "i1", Session: "sess1", Agent: "ci", Service: "github", Method: "GET",
		Host: "api.github.com", Port: 443, Path: "/user", Status: 200, Decision: "forwarded", BytesIn: 3, BytesOut: 40,
		Duration: 1500 * time.Microsecond, Credentials: []string{"GITHUB_TOKEN"}, Client: "127.0.0.1"}
}

func TestActivity(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		clk := newClock()
		db := open(t, b.config(t))
		if list, err := db.ListActivity(ctx, ActivityFilter{}); err != nil || len(list) != 0 {
			t.Fatalf("new database: %v %v", list, err)
		}
		t0 := clk.Now()
		r1 := activityRow("a1", t0)
		r2 := activityRow("a2", t0.Add(time.Second))
		r2.Agent, r2.Session, r2.Service, r2.Host, r2.Status, r2.Decision, r2.Code, r2.Reason = "dev", "sess2", "", "evil.example", 403, "refused", "uncovered_host", "no service covers it"
		r2.Credentials = []string{}
		r3 := activityRow("a3", t0.Add(2*time.Second))
		r3.Status = 404
		must(t, db.InsertActivity(ctx, []ActivityRow{r1, r2, r3}))
		// A retried batch that had committed: skipped, not an error.
		must(t, db.InsertActivity(ctx, []ActivityRow{r3}))
		refused(t, db, "no id", db.InsertActivity(ctx, []ActivityRow{activityRow("", t0)}))
		refused(t, db, "the zero time", db.InsertActivity(ctx, []ActivityRow{activityRow("a9", time.Time{})}))
		all, err := db.ListActivity(ctx, ActivityFilter{})
		must(t, err)
		if want := []ActivityRow{r3, r2, r1}; !reflect.DeepEqual(all, want) {
			t.Fatalf("ListActivity = %+v, want %+v (newest first)", all, want)
		}
		ids := func(f ActivityFilter) []string {
			t.Helper()
			list, err := db.ListActivity(ctx, f)
			must(t, err)
			var out []string
			for _, r := range list {
				out = append(out, r.ID)
			}
			return out
		}
		for _, tc := range []struct {
			f    ActivityFilter
			want []string
		}{
			{ActivityFilter{Session: "sess2"}, []string{"a2"}},
			{ActivityFilter{Agent: "ci"}, []string{"a3", "a1"}},
			{ActivityFilter{Service: "github"}, []string{"a3", "a1"}},
			{ActivityFilter{Host: "evil.example"}, []string{"a2"}},
			{ActivityFilter{Decision: "refused"}, []string{"a2"}},
			{ActivityFilter{Code: "uncovered_host"}, []string{"a2"}},
			{ActivityFilter{Status: 404}, []string{"a3"}},
			{ActivityFilter{Since: t0.Add(time.Second)}, []string{"a3", "a2"}},
			{ActivityFilter{Before: &Cursor{At: r3.At, ID: r3.ID}}, []string{"a2", "a1"}},
			{ActivityFilter{Before: &Cursor{At: r3.At}}, []string{"a2", "a1"}},
			{ActivityFilter{After: &Cursor{At: r1.At, ID: r1.ID}}, []string{"a2", "a3"}}, // oldest first
			{ActivityFilter{After: &Cursor{At: r1.At}}, []string{"a1", "a2", "a3"}},      // from that time on
			{ActivityFilter{After: &Cursor{At: r1.At}, Limit: 1}, []string{"a1"}},
			{ActivityFilter{Agent: "ci", Limit: 1}, []string{"a3"}},
			{ActivityFilter{Agent: "nobody"}, nil},
		} {
			if got := ids(tc.f); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ListActivity(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		}

		// Paging over entries sharing their time visits each once.
		var burst []ActivityRow
		for i := range 250 {
			burst = append(burst, activityRow(fmt.Sprintf("b%03d", i), t0.Add(time.Duration(i%3)*time.Hour)))
		}
		must(t, db.InsertActivity(ctx, burst)) // more than one chunk
		seen := map[string]bool{}
		var before *Cursor
		for {
			page, err := db.ListActivity(ctx, ActivityFilter{Limit: 7, Before: before})
			must(t, err)
			for _, r := range page {
				if seen[r.ID] {
					t.Fatalf("%s twice", r.ID)
				}
				seen[r.ID] = true
			}
			if len(page) < 7 {
				break
			}
			last := page[len(page)-1]
			before = &Cursor{At: last.At, ID: last.ID}
		}
		if len(seen) != 253 {
			t.Fatalf("paging saw %d entries, want 253", len(seen))
		}
		// And forward (the live stream's reads), oldest first.
		clear(seen)
		after := &Cursor{At: t0.Add(-time.Hour)}
		for {
			page, err := db.ListActivity(ctx, ActivityFilter{Limit: 7, After: after})
			must(t, err)
			for i, r := range page {
				if seen[r.ID] || i > 0 && r.At.Before(page[i-1].At) {
					t.Fatalf("%s twice or out of order", r.ID)
				}
				seen[r.ID] = true
			}
			if len(page) < 7 {
				break
			}
			last := page[len(page)-1]
			after = &Cursor{At: last.At, ID: last.ID}
		}
		if len(seen) != 253 {
			t.Fatalf("paging forward saw %d entries, want 253", len(seen))
		}

		// Retention by count keeps the newest chunks holding at least
		// the count (fewer than the count and a chunk), then by age,
		// deleting in chunks (smaller than a backlog here).
		db.activityDeleteChunk = 7
		n, err := db.TrimActivity(ctx, 100)
		must(t, err)
		if n < 253-100-maxChunkEntries+1 || n > 253-100 {
			t.Fatalf("TrimActivity removed %d, want 90 to 153", n)
		}
		if n, err := db.TrimActivity(ctx, 100); err != nil || n != 0 {
			t.Fatalf("TrimActivity again: %d %v", n, err)
		}
		kept, err := db.ListActivity(ctx, ActivityFilter{Limit: 1000})
		must(t, err)
		if len(kept) != 253-n || kept[0].At.Before(t0.Add(2*time.Hour)) {
			t.Fatalf("kept %d, newest %v", len(kept), kept[0].At)
		}
		n, err = db.DeleteActivityBefore(ctx, t0.Add(2*time.Hour))
		must(t, err)
		rest, err := db.ListActivity(ctx, ActivityFilter{Limit: 1000})
		must(t, err)
		if n+len(rest) != len(kept) || len(rest) == 0 {
			t.Fatalf("DeleteActivityBefore removed %d, left %d", n, len(rest))
		}
		for _, r := range rest {
			if r.At.Before(t0.Add(2 * time.Hour)) {
				t.Fatalf("left %+v", r)
			}
		}
	})
}

// BenchmarkActivityQuery: filtered pages of a table of
// BENCH_ACTIVITY_ROWS entries (default 1 000 000) on each backend: the
// newest page, a page of one agent, of one host with a status, and a
// page deep into one agent's history (a cursor). Filling the table
// takes a while; the latencies are reported per query.
func BenchmarkActivityQuery(b *testing.B) {
	rows := 1_000_000
	if s := os.Getenv("BENCH_ACTIVITY_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1000 {
			b.Fatalf("BENCH_ACTIVITY_ROWS=%q: a number, at least 1000", s)
		}
		rows = n
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			db, err := Open(ctx, be.config(b))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			start := time.Now()
			batch := make([]ActivityRow, 0, 5000)
			for i := range rows {
				r := activityRow(fmt.Sprintf("act_%016x%08x", i, i), t0.Add(time.Duration(i)*time.Millisecond))
				r.Agent = "agent" + strconv.Itoa(i%100)
				r.Session = "sess" + strconv.Itoa(i%5000)
				r.Host = "host" + strconv.Itoa(i%500) + ".example"
				r.Status = []int{200, 200, 200, 403, 404}[i%5]
				if r.Status == 403 {
					r.Decision, r.Code = "refused", "uncovered_host"
				}
				batch = append(batch, r)
				if len(batch) == cap(batch) || i == rows-1 {
					if err := db.InsertActivity(ctx, batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			b.Logf("%s: %d rows inserted in %v", be.name, rows, time.Since(start).Round(time.Millisecond))
			deep := t0.Add(time.Duration(rows/2) * time.Millisecond)
			queries := []struct {
				name string
				f    ActivityFilter
			}{
				{"newest", ActivityFilter{}},
				{"agent", ActivityFilter{Agent: "agent7"}},
				{"host+status", ActivityFilter{Host: "host43.example", Status: 403}},
				{"session", ActivityFilter{Session: "sess123"}},
				{"agent+cursor", ActivityFilter{Agent: "agent7", Before: &Cursor{At: deep}}},
				{"refused", ActivityFilter{Decision: "refused"}},
			}
			for _, q := range queries {
				b.Run(q.name, func(b *testing.B) {
					for b.Loop() {
						list, err := db.ListActivity(ctx, q.f)
						if err != nil {
							b.Fatal(err)
						}
						if len(list) == 0 {
							b.Fatalf("%s: no rows", q.name)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/query")
				})
			}
		})
	}
}
