package state

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// health is what the pinger learnt: when the database last answered and,
// if it has since failed, why. On PostgreSQL it also holds what the
// LISTEN loop learnt: since when this instance has not been hearing
// other instances' changes.
type health struct {
	last    atomic.Int64 // unix nanoseconds (Config.Now) of the last answer
	lastErr atomic.Pointer[string]
	closed  atomic.Bool

	deafSince atomic.Int64 // unix nanoseconds (Config.Now) the LISTEN connection was lost; 0 while it is up
	deafErr   atomic.Pointer[string]
	// answering wakes the LISTEN loop from its backoff when the pinger
	// finds the database answering again, so that the instance hears
	// changes (and is healthy) again within a ping of the database's
	// return rather than after a backoff of up to listenMaxBackoff.
	answering chan struct{}
}

// deaf records that the LISTEN connection is down, keeping the first
// moment of an outage.
func (h *health) deaf(now time.Time, err string) {
	h.deafErr.Store(&err)
	h.deafSince.CompareAndSwap(0, now.UnixNano())
}

// hearing records that the LISTEN connection is up.
func (h *health) hearing() { h.deafSince.Store(0) }

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
//
// On PostgreSQL it also fails once the LISTEN connection has been down
// for more than MaxStale, even while pings succeed: until it is back,
// this instance does not hear other instances' revocations, so what it
// serves could be older than MaxStale. (The first moments after the
// connection comes back are covered by the full reload it triggers.)
func (db *DB) Healthy() error {
	if db.health.closed.Load() {
		return fmt.Errorf("state %s: the database is closed", db.backend)
	}
	now := db.s.Now()
	since := now.Sub(time.Unix(0, db.health.last.Load()))
	if since > db.s.MaxStale {
		reason := "no answer"
		if p := db.health.lastErr.Load(); p != nil {
			reason = *p
		}
		return fmt.Errorf("state %s: database unreachable for %v (more than %v): %s",
			db.backend, since.Round(time.Second), db.s.MaxStale, reason)
	}
	if d := db.health.deafSince.Load(); d != 0 {
		if deaf := now.Sub(time.Unix(0, d)); deaf > db.s.MaxStale {
			reason := "no connection"
			if p := db.health.deafErr.Load(); p != nil {
				reason = *p
			}
			return fmt.Errorf("state %s: not receiving other instances' changes for %v (more than %v): %s",
				db.backend, deaf.Round(time.Second), db.s.MaxStale, reason)
		}
	}
	return nil
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
				select {
				case db.health.answering <- struct{}{}:
				default:
				}
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
