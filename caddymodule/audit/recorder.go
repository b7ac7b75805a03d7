package audit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/internal/textclean"
)

// MaxQueued bounds the entries a Recorder keeps for Retry.
const MaxQueued = 10000

// maxField bounds each text field of an entry (in bytes), so that a
// hostile name tried at login cannot fill the trail.
const maxField = 256

// An entry the store keeps refusing while it writes others would stay
// queued forever: after maxStrikes such refusals, spanning at least
// strikeSpan (so that a store that merely fails now and then does not
// lose entries), Retry drops it.
const (
	maxStrikes = 5
	strikeSpan = time.Minute
)

// retryProbe is how many refusals in a row end a Retry pass: the store
// is most likely down, and trying every queued entry would only add
// load.
const retryProbe = 2

// flushPause is how long Flush waits between passes that left entries.
const flushPause = 100 * time.Millisecond

// Recorder writes entries to Store and keeps those it could not write
// (the store is down) for Retry, up to MaxQueued. Entries are lost, and
// counted (Dropped) and logged, when the queue is full, or when the
// store keeps refusing one while it writes others (see Retry). Entries
// that can only come from a bug (an unknown action or actor kind, no
// actor) are refused, counted (Refused) and logged. It is safe for
// concurrent use. Store must be set; the other fields are optional.
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
	queue   []*pending
	dropped uint64
	refused uint64
	written uint64 // entries the store took, by Record or Retry
	failing bool   // the last Retry failed (it logs only when this changes)
}

// pending is a queued entry and its refusals.
type pending struct {
	e Entry
	// seen is r.written when the store last refused e: a refusal after
	// the store wrote something since is a strike against e itself.
	seen        uint64
	strikes     int
	firstStrike time.Time
}

// Record writes e now: it is called after the change succeeded, and an
// audit failure does not undo it. Record fills in an empty ID and a
// zero Time, makes the text fields valid UTF-8 without control
// characters, of at most 256 bytes (see clean), and, if the store fails
// (ctx included), logs the failure and queues e for Retry. An entry
// with an Action that is not Valid, an ActorKind that is not one of
// ActorKinds, or no Actor is a bug of the caller: it is not written
// (recording it as given would put what no reader expects in the
// trail), but logged at Error and counted (Refused).
func (r *Recorder) Record(ctx context.Context, e Entry) {
	raw := e
	e = r.prepare(e)
	if why := invalid(raw, e); why != "" {
		r.mu.Lock()
		r.refused++
		n := r.refused
		r.mu.Unlock()
		if r.Logger != nil {
			r.Logger.Error("audit entry refused: "+why+" (a bug)", append(fields(e), zap.Uint64("refused_total", n))...)
		}
		return
	}
	err := r.Store.Insert(ctx, e)
	r.mu.Lock()
	if err == nil {
		r.written++
		r.mu.Unlock()
		return
	}
	queued := len(r.queue) < MaxQueued
	if queued {
		r.queue = append(r.queue, &pending{e: e, seen: r.written})
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

// invalid says why an entry (raw as given, e as cleaned) cannot be
// recorded, "" if it can. The closed sets are matched as given: a
// control character in an action is a bug too.
func invalid(raw, e Entry) string {
	switch {
	case !raw.Action.Valid():
		return "unknown action"
	case !validActorKind(raw.ActorKind):
		return "unknown actor kind"
	case e.Actor == "":
		return "no actor"
	}
	return ""
}

// Retry writes queued entries, oldest first, and returns the last
// store error of this pass (nil if none failed). The app's sweeper
// calls it every second. A refused entry goes to the back of the queue,
// so that it holds up no other; two refusals in a row end the pass (the
// store is most likely down). An entry the store refuses again after
// it wrote others since its last refusal has a strike against it; after
// 5 strikes spanning at least a minute it is dropped (Dropped), logged
// at Error without its Detail: the store will not take it, and it must
// not stay queued forever. Its log says when retrying starts failing
// and when the queue is written again, not every second.
func (r *Recorder) Retry(ctx context.Context) error {
	r.retryMu.Lock()
	defer r.retryMu.Unlock()
	r.mu.Lock()
	n := len(r.queue) // entries queued during the pass wait for the next
	r.mu.Unlock()
	written, refusedInRow := 0, 0
	var lastErr error
	for range n {
		r.mu.Lock()
		p := r.queue[0]
		r.mu.Unlock()
		err := r.Store.Insert(ctx, p.e)
		r.mu.Lock()
		// Only Retry removes entries and Record appends, so p is still
		// the first.
		r.queue[0] = nil
		r.queue = r.queue[1:]
		if err == nil {
			r.written++
			written++
			refusedInRow = 0
			if len(r.queue) == 0 {
				r.queue = nil // let the backing array go
			}
			r.mu.Unlock()
			continue
		}
		lastErr = err
		refusedInRow++
		// A refusal that is our own context's is no strike.
		if ctx.Err() == nil && r.written > p.seen {
			if p.strikes == 0 {
				p.firstStrike = r.now()
			}
			p.strikes++
		}
		p.seen = r.written
		if p.strikes >= maxStrikes && r.now().Sub(p.firstStrike) >= strikeSpan {
			r.dropped++
			dropped := r.dropped
			r.mu.Unlock()
			if r.Logger != nil {
				r.Logger.Error("audit entry dropped: the store refused it again and again while it wrote others",
					append(fields(p.e), zap.Error(err), zap.Int("attempts", p.strikes), zap.Uint64("dropped_total", dropped))...)
			}
		} else {
			r.queue = append(r.queue, p)
			r.mu.Unlock()
		}
		if refusedInRow >= retryProbe || ctx.Err() != nil {
			break
		}
	}
	r.mu.Lock()
	wasFailing, left := r.failing, len(r.queue)
	r.failing = lastErr != nil
	r.mu.Unlock()
	switch {
	case r.Logger == nil:
	case lastErr != nil && !wasFailing:
		r.Logger.Error("retrying queued audit entries failed; retrying later", zap.Int("queued", left), zap.Error(lastErr))
	case lastErr == nil && wasFailing:
		r.Logger.Info("queued audit entries written", zap.Int("entries", written), zap.Int("queued", left))
	}
	return lastErr
}

// Flush retries until the queue is empty or ctx ends (give it a
// deadline: the app calls it from Stop, so that entries queued while
// the store was down are not lost on a clean shutdown). If entries
// remain, each is logged at Error (without its Detail), since the
// process is about to lose them, and the error says how many; they stay
// queued.
func (r *Recorder) Flush(ctx context.Context) error {
	var lastErr error
	for {
		if err := r.Retry(ctx); err != nil {
			lastErr = err
		}
		if r.Queued() == 0 {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		t := time.NewTimer(flushPause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		if ctx.Err() != nil {
			break
		}
	}
	r.mu.Lock()
	left := make([]Entry, len(r.queue))
	for i, p := range r.queue {
		left[i] = p.e
	}
	r.mu.Unlock()
	if len(left) == 0 {
		return nil // the last pass raced the deadline and won
	}
	if r.Logger != nil {
		for _, e := range left {
			r.Logger.Error("audit entry not written before shutdown", append(fields(e), zap.NamedError("last_error", lastErr))...)
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return fmt.Errorf("audit: %d queued entries not written: %w", len(left), lastErr)
}

// Stats is what a Recorder could not write, for the broker's log and
// its health pages.
type Stats struct {
	// Queued entries wait for Retry.
	Queued int
	// Dropped entries were lost (see Recorder.Dropped); Refused ones
	// were a caller's bug (Recorder.Refused).
	Dropped, Refused uint64
}

// Stats returns the Recorder's counts at once.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Queued: len(r.queue), Dropped: r.dropped, Refused: r.refused}
}

// Queued is the number of entries waiting for Retry.
func (r *Recorder) Queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// Dropped is the number of entries lost: the queue was full, or the
// store kept refusing them (see Retry).
func (r *Recorder) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Refused is the number of entries Record refused as a caller's bug
// (an unknown action or actor kind, no actor).
func (r *Recorder) Refused() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

func (r *Recorder) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
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
		e.Time = r.now()
	}
	e.Time = e.Time.UTC()
	e.ID, e.Actor, e.ActorKind = clean(e.ID), clean(e.Actor), clean(e.ActorKind)
	e.Action = Action(clean(string(e.Action)))
	e.Target, e.Client, e.Detail = clean(e.Target), clean(e.Client), clean(e.Detail)
	return e
}

// clean is the one cleaning of stored text (textclean.Clean: valid
// UTF-8 without control or bidirectional characters), at most maxField
// bytes.
func clean(s string) string { return textclean.Clean(s, maxField) }

// fields are e's log fields: all but Detail, which, although it never
// holds a secret, is left to the trail itself.
func fields(e Entry) []zap.Field {
	return []zap.Field{
		zap.String("id", e.ID), zap.Time("time", e.Time), zap.String("actor", e.Actor),
		zap.String("actor_kind", e.ActorKind), zap.String("action", string(e.Action)),
		zap.String("target", e.Target), zap.String("client", e.Client),
	}
}
