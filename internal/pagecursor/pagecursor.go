// Package pagecursor is the one codec of the list cursors the API
// hands out (the audit trail's and the activity log's next_before, the
// activity stream's event ids): a position (time, id) in a list ordered
// by time then id, newest first. A page's next_before is its last
// entry's position; the next page holds the entries strictly before it.
package pagecursor

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// Cursor is a position in the order (At, then ID). An empty ID sorts
// before every id, so "before {At, ""}" means strictly before At.
type Cursor struct {
	At time.Time
	ID string
}

// Encode is the cursor of the entry (at, id): "<unix nanoseconds>_<id>". A time outside what int64
// nanoseconds since 1970 hold (years 1677 to 2262) is clamped to the
// nearest end rather than wrapped around. Clients treat it as opaque.
func Encode(at time.Time, id string) string {
	switch {
	case at.Before(minTime):
		at = minTime
	case at.After(maxTime):
		at = maxTime
	}
	return strconv.FormatInt(at.UnixNano(), 10) + "_" + id
}

// errCursor is every error of Parse: the request is bad (400). The
// caller says which parameter it was.
var errCursor = errors.New("want a cursor this server handed out (a page's next_before, an event's id) or an RFC 3339 time such as 2026-01-02T15:04:05Z")

// maxCursor bounds Parse's input.
const maxCursor = 128

// Representable times: UnixNano is defined for these only.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

// Parse reads a cursor Encode made (its time and id), or an RFC 3339 time (id "",
// which sorts before every id, so the page holds the entries strictly
// before that time; times beyond what nanoseconds since 1970 can hold
// are clamped to it). at is in UTC. Any error is the client's (400)
// and does not repeat the input.
func Parse(s string) (at time.Time, id string, err error) {
	if s == "" || len(s) > maxCursor {
		return time.Time{}, "", errCursor
	}
	if ns, rest, ok := strings.Cut(s, "_"); ok && canonicalInt(ns) {
		n, err := strconv.ParseInt(ns, 10, 64)
		if err != nil || !validID(rest) {
			return time.Time{}, "", errCursor
		}
		return time.Unix(0, n).UTC(), rest, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, "", errCursor
	}
	t = t.UTC()
	switch {
	case t.Before(minTime):
		t = minTime
	case t.After(maxTime):
		t = maxTime
	}
	return t, "", nil
}

// canonicalInt: an optional '-' and decimal digits without leading
// zeros, as strconv.FormatInt writes them.
func canonicalInt(s string) bool {
	d := strings.TrimPrefix(s, "-")
	if d == "" || (d[0] == '0' && (len(d) > 1 || len(d) < len(s))) {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}

// validID: what an entry id may look like in a cursor, 1-64 of
// A-Z a-z 0-9 '_' '-' (audit ids are "aud_" and 24 hex digits,
// activity ids "act_" and 32).
func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
