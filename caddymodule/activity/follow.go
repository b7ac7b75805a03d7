package activity

import (
	"context"
	"time"
)

// DefaultLookback is how far before the newest entry seen a Follower
// looks again: another broker's batch can commit up to its batch wait
// (and retries) after its entries' times, so entries appear in the
// table out of order.
const DefaultLookback = 5 * time.Second

// followPage is the most entries one read of a poll asks for; a poll
// reads page after page until a short one, at most followPages of
// them (a backlog, such as a resume from an old cursor, is sent over
// several polls rather than held at once).
const (
	followPage  = 1000
	followPages = 10
)

// Follower reads the entries new since its last poll, from the
// database (so that every broker's entries appear), oldest first, each
// once. It is not safe for concurrent use: one per stream.
type Follower struct {
	lister   Lister
	filter   Filter
	lookback time.Duration
	// mark is the newest At seen; seen holds the ids seen at or after
	// mark - lookback.
	mark time.Time
	seen map[string]time.Time
	// after: only entries after it are sent (Last-Event-ID, ?after=).
	after *Cursor
	// resume is where the next poll reads on when the last one stopped
	// at followPages; nil: from mark - lookback.
	resume *Cursor
	// primed: the first complete read is done (without a cursor, it
	// only notes what is there).
	primed bool
}

// NewFollower follows f's entries (its Since is kept; Before, After
// and Limit are the Follower's own). With after nil it starts with
// entries new from now; otherwise with those after the cursor (a
// resumed stream).
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
// first. It reads in (At, ID) order from lookback before the newest
// entry seen, page by page until a short page, so a flood between two
// polls is sent whole. The first poll of a Follower without a cursor
// only notes what is there (the stream shows new entries).
func (fl *Follower) Poll(ctx context.Context) ([]Entry, error) {
	f := fl.filter
	f.Before, f.Limit = nil, followPage
	from := Cursor{At: fl.mark.Add(-fl.lookback)} // from that time on
	if fl.resume != nil {
		from = *fl.resume
	}
	var out []Entry
	complete := false
	for range followPages {
		f.After = &from
		got, err := fl.lister.ListActivity(ctx, f)
		if err != nil {
			return nil, err
		}
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
		if len(got) < followPage {
			complete = true
			break
		}
		last := got[len(got)-1]
		from = Cursor{At: last.At, ID: last.ID}
	}
	fl.resume = nil
	if complete {
		fl.primed = true
	} else {
		fl.resume = &from
	}
	horizon := fl.mark.Add(-fl.lookback)
	for id, at := range fl.seen {
		if at.Before(horizon) {
			delete(fl.seen, id)
		}
	}
	return out, nil
}

// after reports whether e comes after c in the (At, ID) order.
func after(e Entry, c Cursor) bool {
	return e.At.After(c.At) || e.At.Equal(c.At) && e.ID > c.ID
}
