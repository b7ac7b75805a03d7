package activity

import (
	"context"
	"slices"
	"strings"
	"time"
)

// DefaultLookback is how far before the newest entry seen a Follower
// looks again: another broker's batch can commit up to its batch wait
// (and retries) after its entries' times, so entries appear in the
// table out of order.
const DefaultLookback = 5 * time.Second

// followLimit is the most entries one poll reads: a flood of more than
// that between two polls loses its oldest from the stream (the list
// still has them).
const followLimit = 1000

// Follower reads the entries new since its last poll, from the
// database (so that every broker's entries appear), oldest first, each
// once. It is not safe for concurrent use: one per stream.
type Follower struct {
	lister   Lister
	filter   Filter
	lookback time.Duration
	// mark is the newest At seen; seen holds the ids seen at or after
	// mark - lookback.
	mark   time.Time
	seen   map[string]time.Time
	after  *Cursor // only entries after it (Last-Event-ID)
	primed bool
}

// NewFollower follows f's entries (its Since, Before and Limit are the
// Follower's own). With after nil it starts with entries new from now;
// otherwise with those after the cursor (a resumed stream), as far as
// the lookback reaches from the newest entry at hand.
func NewFollower(l Lister, f Filter, after *Cursor, now time.Time, lookback time.Duration) *Follower {
	if lookback <= 0 {
		lookback = DefaultLookback
	}
	fl := &Follower{lister: l, filter: f, lookback: lookback, mark: now, seen: map[string]time.Time{}}
	if after != nil {
		fl.after, fl.mark, fl.primed = after, after.At, true
	}
	return fl
}

// Poll returns the entries that appeared since the last poll, oldest
// first. The first poll of a Follower without a cursor only notes what
// is there (the stream shows new entries).
func (fl *Follower) Poll(ctx context.Context) ([]Entry, error) {
	f := fl.filter
	f.Before, f.Limit = nil, followLimit
	f.Since = fl.mark.Add(-fl.lookback)
	if fl.filter.Since.After(f.Since) {
		f.Since = fl.filter.Since
	}
	got, err := fl.lister.ListActivity(ctx, f)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range got {
		if _, ok := fl.seen[e.ID]; ok {
			continue
		}
		fl.seen[e.ID] = e.At
		if e.At.After(fl.mark) {
			fl.mark = e.At
		}
		if !fl.primed || fl.after != nil && !after(e, *fl.after) {
			continue
		}
		out = append(out, e)
	}
	fl.primed = true
	horizon := fl.mark.Add(-fl.lookback)
	for id, at := range fl.seen {
		if at.Before(horizon) {
			delete(fl.seen, id)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// after reports whether e comes after c in the (At, ID) order.
func after(e Entry, c Cursor) bool {
	return e.At.After(c.At) || e.At.Equal(c.At) && e.ID > c.ID
}
