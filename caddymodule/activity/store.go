package activity

import (
	"context"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/pagecursor"
)

// Writer stores a batch of entries in one transaction. A batch retried
// as a whole (one that did commit, its outcome lost) must be stored
// once: the Recorder retries the same batch, never a part of one.
type Writer interface {
	InsertActivity(ctx context.Context, entries []Entry) error
}

// Lister reads entries back, newest first by (At, ID), or oldest
// first after a cursor (Filter.After).
type Lister interface {
	ListActivity(ctx context.Context, f Filter) ([]Entry, error)
}

// Purger deletes what retention no longer keeps: entries older than a
// time, and all but (about) the newest keep entries: it may keep a few
// more, as the state database deletes in chunks (at least keep, fewer
// than keep+64). Both return how many went.
type Purger interface {
	DeleteActivityBefore(ctx context.Context, t time.Time) (int, error)
	TrimActivity(ctx context.Context, keep int) (int, error)
}

// Store is all of it: the state database, through the app's adapter.
type Store interface {
	Writer
	Lister
	Purger
}

// Cursor is a position in the order (At, then ID). An empty ID sorts
// before every ID: before {At, ""} is strictly before At, after it is
// from At on. It is the API's one cursor type.
type Cursor = pagecursor.Cursor

// Filter selects entries: an empty (zero) field matches every value.
// Since keeps entries at or after it; Before, entries strictly older
// than the cursor; After, entries strictly newer than the cursor, and
// then the order is oldest first (a Follower's reads). Limit is
// clamped by the store (1..1000, 0: 100).
type Filter struct {
	Session  string
	Agent    string
	Service  string
	Host     string
	Decision Decision
	Status   int
	Code     string
	Since    time.Time
	Before   *Cursor
	After    *Cursor
	Limit    int
}
