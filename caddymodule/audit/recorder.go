package audit

import (
	"context"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// MaxQueued bounds the entries a Recorder keeps for Retry.
const MaxQueued = 10000

// maxField bounds each text field of an entry (in bytes), so that a
// hostile name tried at login cannot fill the trail.
const maxField = 256

// Recorder writes entries to Store and keeps those it could not write
// (the store is down) for Retry, up to MaxQueued; past that, entries
// are dropped, counted (Dropped) and logged. It is safe for concurrent
// use. Store must be set; the other fields are optional.
type Recorder struct {
	Store Store
	// Logger gets the failures, at Error level, each with the entry
	// but never its Detail; nil logs nothing.
	Logger *zap.Logger
	// Now is the clock (nil: time.Now); NewID makes ids (nil: NewID).
	Now   func() time.Time
	NewID func() string

	retryMu sync.Mutex // one Retry at a time, so none is written twice

	mu      sync.Mutex
	queue   []Entry
	dropped uint64
	failing bool // the last Retry failed (it logs only when this changes)
}

// Record writes e now: it is called after the change succeeded, and an
// audit failure does not undo it. Record fills in an empty ID and a
// zero Time, makes the text fields valid UTF-8 of at most 256 bytes,
// and, if the store fails (ctx included), logs the failure and queues
// e for Retry.
func (r *Recorder) Record(ctx context.Context, e Entry) {
	e = r.prepare(e)
	err := r.Store.Insert(ctx, e)
	if err == nil {
		return
	}
	r.mu.Lock()
	queued := len(r.queue) < MaxQueued
	if queued {
		r.queue = append(r.queue, e)
	} else {
		r.dropped++
	}
	dropped := r.dropped
	r.mu.Unlock()
	if r.Logger == nil {
		return
	}
	if queued {
		r.Logger.Error("audit entry not written; it is queued and retried", append(fields(e), zap.Error(err))...)
		return
	}
	r.Logger.Error("audit entry not written and dropped: the retry queue is full",
		append(fields(e), zap.Error(err), zap.Int("queue_limit", MaxQueued), zap.Uint64("dropped_total", dropped))...)
}

// Retry writes the queued entries, oldest first, until the queue is
// empty (nil) or the store fails (its error; the rest stay queued).
// The app's sweeper calls it every second. Its log says when retrying
// starts failing and when the queue is written again, not every second.
func (r *Recorder) Retry(ctx context.Context) error {
	r.retryMu.Lock()
	defer r.retryMu.Unlock()
	written := 0
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			wasFailing := r.failing
			r.failing = false
			r.mu.Unlock()
			if wasFailing && r.Logger != nil {
				r.Logger.Info("queued audit entries written", zap.Int("entries", written))
			}
			return nil
		}
		e := r.queue[0]
		r.mu.Unlock()
		if err := r.Store.Insert(ctx, e); err != nil {
			r.mu.Lock()
			wasFailing, left := r.failing, len(r.queue)
			r.failing = true
			r.mu.Unlock()
			if !wasFailing && r.Logger != nil {
				r.Logger.Error("retrying queued audit entries failed; retrying later", zap.Int("queued", left), zap.Error(err))
			}
			return err
		}
		written++
		r.mu.Lock()
		// Only Retry removes entries and Record appends, so e is
		// still the first.
		r.queue[0] = Entry{}
		r.queue = r.queue[1:]
		if len(r.queue) == 0 {
			r.queue = nil // let the backing array go
		}
		r.mu.Unlock()
	}
}

// Queued is the number of entries waiting for Retry.
func (r *Recorder) Queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// Dropped is the number of entries lost because the queue was full.
func (r *Recorder) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

func (r *Recorder) prepare(e Entry) Entry {
	if e.ID == "" {
		if r.NewID != nil {
			e.ID = r.NewID()
		} else {
			e.ID = NewID()
		}
	}
	if e.Time.IsZero() {
		if r.Now != nil {
			e.Time = r.Now()
		} else {
			e.Time = time.Now()
		}
	}
	e.Time = e.Time.UTC()
	e.ID, e.Actor, e.ActorKind = clean(e.ID), clean(e.Actor), clean(e.ActorKind)
	e.Action = Action(clean(string(e.Action)))
	e.Target, e.Client, e.Detail = clean(e.Target), clean(e.Client), clean(e.Detail)
	return e
}

// clean makes s valid UTF-8 of at most maxField bytes, cut at a
// character boundary and marked with "...".
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxField {
		return s
	}
	cut := maxField - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// fields are e's log fields: all but Detail, which, although it never
// holds a secret, is left to the trail itself.
func fields(e Entry) []zap.Field {
	return []zap.Field{
		zap.String("id", e.ID), zap.Time("time", e.Time), zap.String("actor", e.Actor),
		zap.String("actor_kind", e.ActorKind), zap.String("action", string(e.Action)),
		zap.String("target", e.Target), zap.String("client", e.Client),
	}
}
