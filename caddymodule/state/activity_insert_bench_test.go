package state

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkActivityInsert: the cost per entry of the Recorder's
// batches (500 entries, one transaction) on each backend.
func BenchmarkActivityInsert(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			db, err := Open(ctx, be.config(b))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			t0 := time.Now()
			batch := make([]ActivityRow, 500)
			n := 0
			for b.Loop() {
				for i := range batch {
					n++
					r := activityRow(fmt.Sprintf("act_%016x%016x", n, n), t0.Add(time.Duration(n)))
					r.Session = fmt.Sprintf("ses_%d", n%50)
					batch[i] = r
				}
				if err := db.InsertActivity(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n), "µs/entry")
		})
	}
}
