package activity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/internal/periodic"
)

// DefaultPurgeEvery is how often Retention purges by default: the
// sweeper asks every second, a purge of a large table is not free.
const DefaultPurgeEvery = 5 * time.Minute

// Retention deletes, at most once per Every, the entries older than the
// retention and those beyond the row limit (oldest first). It outlives
// config reloads (the app keeps it with the state database). It is
// safe for concurrent use.
type Retention struct {
	Store Purger
	// Every is how often it purges; 0 is DefaultPurgeEvery.
	Every time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger gets what was purged; nil logs nothing.
	Logger *zap.Logger

	gate periodic.Lazy
}

// Purge deletes, if a purge is due, entries older than keep and all
// but the newest maxRows (the app's activity_retention and
// activity_max_rows). A failure is returned and the purge is due again
// at the next call.
func (r *Retention) Purge(ctx context.Context, keep time.Duration, maxRows int) error {
	if keep <= 0 || maxRows <= 0 {
		return fmt.Errorf("activity: a retention of %v and %d rows keeps nothing", keep, maxRows)
	}
	return r.gate.Run(ctx, r.Every, DefaultPurgeEvery, r.Now, func(ctx context.Context, now time.Time) error {
		old, err1 := r.Store.DeleteActivityBefore(ctx, now.Add(-keep))
		over, err2 := r.Store.TrimActivity(ctx, maxRows)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("purging the activity log: %w", err)
		}
		if r.Logger != nil && old+over > 0 {
			r.Logger.Info("purged activity entries past their retention", zap.Int("older", old), zap.Int("over_max_rows", over),
				zap.Duration("activity_retention", keep), zap.Int("activity_max_rows", maxRows))
		}
		return nil
	})
}
