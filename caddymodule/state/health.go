package state

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// health is what the pinger learnt: when the database last answered and,
// if it has since failed, why.
type health struct {
	last    atomic.Int64 // unix nanoseconds (Config.Now) of the last answer
	lastErr atomic.Pointer[string]
	closed  atomic.Bool
}

func (h *health) contact(now time.Time) {
	h.last.Store(now.UnixNano())
	h.lastErr.Store(nil)
}

// Healthy returns nil while the database answered within MaxStale, and
// an error naming the backend once it has been unreachable for longer
// (and after Close). A pinger contacts the database every PingInterval,
// so Healthy itself does no I/O and is cheap enough for every request;
// it also fails when the pinger is stuck on a hung connection, since
// the last answer then grows old.
func (db *DB) Healthy() error {
	if db.health.closed.Load() {
		return fmt.Errorf("state %s: the database is closed", db.backend)
	}
	since := db.s.Now().Sub(time.Unix(0, db.health.last.Load()))
	if since <= db.s.MaxStale {
		return nil
	}
	reason := "no answer"
	if p := db.health.lastErr.Load(); p != nil {
		reason = *p
	}
	return fmt.Errorf("state %s: database unreachable for %v (more than %v): %s",
		db.backend, since.Round(time.Second), db.s.MaxStale, reason)
}

// pingLoop pings the database every PingInterval until ctx ends,
// logging when it stops and starts answering.
func (db *DB) pingLoop(ctx context.Context) {
	t := time.NewTicker(db.s.PingInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, min(db.s.MaxStale, 5*time.Second))
		err := db.sql.PingContext(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			db.health.contact(db.s.Now())
			if failing {
				db.s.Logger.Info("state: the database answers again", zap.String("backend", db.backend))
				failing = false
			}
		default:
			msg := db.wrap("ping", err).Error()
			db.health.lastErr.Store(&msg)
			if !failing {
				db.s.Logger.Warn("state: the database does not answer", zap.String("backend", db.backend), zap.String("error", msg))
				failing = true
			}
		}
	}
}
