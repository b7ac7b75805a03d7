package metrics

import (
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
)

// BenchmarkObserve: the cost Observe adds to each proxied request (it
// runs on the request's goroutine). Series already exist, as in steady
// state.
func BenchmarkObserve(b *testing.B) {
	m := New(Sources{})
	fwd := &activity.Entry{Service: "github", Status: 200, Decision: activity.Forwarded,
		Duration: 40 * time.Millisecond, Credentials: []string{"GITHUB_TOKEN"}}
	ref := &activity.Entry{Status: 403, Decision: activity.Refused, Code: activity.CodeUncoveredHost}
	b.Run("forwarded", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Observe(fwd)
		}
	})
	b.Run("refused", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Observe(ref)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Observe(fwd)
			}
		})
	})
}

// Observe allocates nothing once its series exist (the proxy calls it
// on every request).
func TestObserveAllocatesNothing(t *testing.T) {
	m := New(Sources{})
	e := &activity.Entry{Service: "github", Status: 200, Decision: activity.Forwarded, Credentials: []string{"T"}}
	m.Observe(e)
	if n := testing.AllocsPerRun(100, func() { m.Observe(e) }); n != 0 {
		t.Errorf("Observe allocates %v times per call, want 0", n)
	}
}
