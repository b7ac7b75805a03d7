package state

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkActivityInsert: the cost per entry of the Recorder's
// batches (500 entries, one transaction) on each backend, with one
// session (make bench's workload), a few and many distinct ones. µs/entry is wall time; cpu-µs/entry the CPU of this process
// and, on PostgreSQL, of the server's processes too (Linux only).
func BenchmarkActivityInsert(b *testing.B) {
	for _, be := range backends {
		for _, sessions := range []int{1, 50, 1000} {
			b.Run(fmt.Sprintf("%s/sessions=%d", be.name, sessions), func(b *testing.B) {
				db, err := Open(ctx, be.config(b))
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				cpu := newCPUMeter(b, db)
				t0 := time.Now()
				batch := make([]ActivityRow, 500)
				n := 0
				cpu.start()
				for b.Loop() {
					for i := range batch {
						n++
						r := activityRow(fmt.Sprintf("act_%016x%016x", n, n), t0.Add(time.Duration(n)))
						r.Session = fmt.Sprintf("ses_%d", n%sessions)
						batch[i] = r
					}
					if err := db.InsertActivity(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n), "µs/entry")
				if used, ok := cpu.used(); ok {
					b.ReportMetric(float64(used.Microseconds())/float64(n), "cpu-µs/entry")
				}
			})
		}
	}
}
