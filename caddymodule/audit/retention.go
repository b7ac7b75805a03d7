package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/internal/periodic"
)

// DefaultPurgeEvery is how often Retention purges by default.
const DefaultPurgeEvery = time.Hour

// RetentionStore deletes what was kept long enough: audit entries, and
// the access requests, which are kept as long (their decisions are part
// of the trail; pending ones nobody decided in all that time go too).
type RetentionStore interface {
	DeleteAuditBefore(ctx context.Context, t time.Time) (int, error)
	DeleteAccessRequestsBefore(ctx context.Context, t time.Time) (int, error)
}

// Retention deletes, at most once per Every, the audit entries and
// access requests older than the retention Purge is given. It outlives
// config reloads (the app keeps it with the state database), so a
// reload does not purge again. It is safe for concurrent use.
type Retention struct {
	Store RetentionStore
	// Every is how often it purges; 0 is DefaultPurgeEvery.
	Every time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Logger gets what was purged; nil logs nothing.
	Logger *zap.Logger

	gate periodic.Lazy
}

// Purge deletes, if a purge is due, what is older than keep (the app's
// audit_retention). A failure is returned and the purge is due again at
// the next call (the sweeper calls it every second).
func (r *Retention) Purge(ctx context.Context, keep time.Duration) error {
	if keep <= 0 {
		return fmt.Errorf("audit: a retention of %v keeps nothing", keep)
	}
	return r.gate.Run(ctx, r.Every, DefaultPurgeEvery, r.Now, func(ctx context.Context, now time.Time) error {
		horizon := now.Add(-keep)
		entries, err1 := r.Store.DeleteAuditBefore(ctx, horizon)
		requests, err2 := r.Store.DeleteAccessRequestsBefore(ctx, horizon)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("purging the audit trail: %w", err)
		}
		if r.Logger != nil && entries+requests > 0 {
			r.Logger.Info("purged audit entries and access requests past their retention", zap.Int("audit_entries", entries),
				zap.Int("access_requests", requests), zap.Duration("audit_retention", keep))
		}
		return nil
	})
}
