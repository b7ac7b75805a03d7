//go:build unix

package caddymodule

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/url"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/discovered"
	"github.com/agentvault/caddy-agent-vault/caddymodule/metrics"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

// discardWriter is an activity.Writer that only counts: the hand-off
// benchmark measures the proxy's side and the Recorder's, not a store.
type discardWriter struct{ n atomic.Int64 }

func (w *discardWriter) InsertActivity(_ context.Context, es []activity.Entry) error {
	w.n.Add(int64(len(es)))
	return nil
}

// BenchmarkActivityHandoff is what the activity log costs each proxied
// request short of the database: logExchange building the entry and
// the observers' fan-out (off: the metrics only, as with
// disable_activity_log; on: the Recorder too), and the Recorder's
// writer goroutine taking and preparing entries. Each request also
// does a few µs of other work and yields, as a real one does far more
// and waits on the network, so that the writer runs, keeps up and waits
// between entries the way it does in a server (flat out, it would find
// a backlog and never wait, or wait for a preemption to run at all).
// cpu-ns/op is the whole process's CPU (every goroutine's, the
// runtime's and the garbage collector's) per request; on minus off is
// the activity log's cost: go test -run '^$' -bench ActivityHandoff
// -benchmem ./caddymodule/
func BenchmarkActivityHandoff(b *testing.B) {
	for _, mode := range []struct {
		name string
		off  bool
	}{{"off", true}, {"on", false}} {
		b.Run(mode.name, func(b *testing.B) {
			w := &discardWriter{}
			rec := activity.NewRecorder(w, activity.Options{Instance: "bench"})
			p := &Proxy{logger: zap.NewNop(), deps: proxyDeps{observe: proxyObservers(mode.off, rec, metrics.New(metrics.Sources{}), discovered.NewTracker(nil, 0))}}
			sess := &sessions.Session{ID: "ses_0123456789abcdef", Agent: "bench-agent"}
			svc := &services.Compiled{Service: services.Service{Name: "bench"}}
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				var work [4096]byte
				r := &http.Request{Method: "GET", URL: &url.URL{Path: "/bench/user"}, RemoteAddr: "127.0.0.1:54321", Header: http.Header{}}
				for pb.Next() {
					x := &exchange{r: r, sess: sess, target: target{host: "bench.test", port: 443, tls: true}, start: time.Now(),
						path: "/bench/user", svc: svc, resolved: []string{"BENCH_TOKEN"}}
					st := &statusRecorder{x: x, code: http.StatusOK, bytes: 1234}
					p.logExchange(x, st)
					sum := sha256.Sum256(work[:])
					copy(work[:], sum[:])
					runtime.Gosched() // where a request would wait on the network
				}
			})
			b.StopTimer()
			cpu := processCPU(b) - cpu0
			if err := rec.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			// Every entry written or counted; drops (the writer starved of
			// CPU by other work on the machine) make "on" look cheaper,
			// so they are reported.
			st := rec.Stats()
			if !mode.off && int(w.n.Load())+int(st.Dropped) != b.N {
				b.Fatalf("written %d of %d, stats %+v", w.n.Load(), b.N, st)
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(st.Dropped)/float64(b.N), "dropped/op")
		})
	}
}

// processCPU is the CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
