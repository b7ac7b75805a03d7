// Package periodic runs a job at most once per interval, however often
// it is asked to: the sweeper asks every second, the purges it drives
// run once an hour.
package periodic

import (
	"context"
	"sync"
	"time"
)

// Gate runs a job at most once per Every. A job that fails is not
// counted: it is tried again, but not before RetryWait (or Every, if
// shorter), so a database that is down is not hit, and its failure
// not logged, on every one of the sweeper's ticks. Runs are serialized, so two
// callers (the sweepers of an old and a new config during a reload)
// never run the job twice in one interval. The zero Gate runs every
// time; it is safe for concurrent use.
type Gate struct {
	// Every is the interval; 0 or less runs the job on every Run.
	Every time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	mu     sync.Mutex
	last   time.Time // of the last successful run; zero: never
	failed time.Time // of the last failed run, if later than last
}

// RetryWait is the least time between a failed run and the next try.
const RetryWait = time.Minute

// Run runs job with the current time if it is due (it never ran, or
// its last successful run is Every ago), and returns its error; when
// it is not due (or a failure is being waited out), Run returns nil
// without calling it.
func (g *Gate) Run(ctx context.Context, job func(ctx context.Context, now time.Time) error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.Now != nil {
		now = g.Now()
	}
	if !g.last.IsZero() && now.Sub(g.last) < g.Every {
		return nil
	}
	if !g.failed.IsZero() && now.Sub(g.failed) < min(RetryWait, g.Every) {
		return nil
	}
	if err := job(ctx, now); err != nil {
		g.failed = now
		return err
	}
	g.last, g.failed = now, time.Time{}
	return nil
}

// Lazy is a Gate set up on its first Run from settings filled in after
// construction (the exported Every and Now of the retentions that use
// it): every, or def when every is 0, and the clock now (nil:
// time.Now). Later Runs keep that setup. It is safe for concurrent use.
type Lazy struct {
	once sync.Once
	gate Gate
}

// Run runs job as Gate.Run does, setting the gate up first if need be.
func (l *Lazy) Run(ctx context.Context, every, def time.Duration, now func() time.Time, job func(ctx context.Context, now time.Time) error) error {
	l.once.Do(func() {
		l.gate.Every, l.gate.Now = every, now
		if every == 0 {
			l.gate.Every = def
		}
	})
	return l.gate.Run(ctx, job)
}
