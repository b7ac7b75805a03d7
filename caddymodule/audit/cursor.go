package audit

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// Entries are listed newest first by (Time, ID); a page's next_before
// cursor is the last entry's pair, and the next page holds the entries
// strictly before it.

// EncodeCursor is the next_before cursor of a page ending with the
// entry (at, id): "<unix nanoseconds>_<id>". A time outside what int64
// nanoseconds since 1970 hold (years 1677 to 2262) is clamped to the
// nearest end rather than wrapped around. Clients treat it as opaque.
func EncodeCursor(at time.Time, id string) string {
	switch {
	case at.Before(minTime):
		at = minTime
	case at.After(maxTime):
		at = maxTime
	}
	return strconv.FormatInt(at.UnixNano(), 10) + "_" + id
}

// errBefore is every error of ParseBefore: the query is bad (400).
var errBefore = errors.New(`"before" must be the next_before of a previous page or an RFC 3339 time such as 2026-01-02T15:04:05Z`)

// maxCursor bounds ParseBefore's input.
const maxCursor = 128

// Representable times: UnixNano is defined for these only.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

// ParseBefore reads the ?before= of GET /api/v1/audit: a cursor
// EncodeCursor made (its time and id), or an RFC 3339 time (id "",
// which sorts before every id, so the page holds the entries strictly
// before that time; times beyond what nanoseconds since 1970 can hold
// are clamped to it). at is in UTC. Any error is the client's (400)
// and does not repeat the input.
func ParseBefore(s string) (at time.Time, id string, err error) {
	if s == "" || len(s) > maxCursor {
		return time.Time{}, "", errBefore
	}
	if ns, rest, ok := strings.Cut(s, "_"); ok && canonicalInt(ns) {
		n, err := strconv.ParseInt(ns, 10, 64)
		if err != nil || !validID(rest) {
			return time.Time{}, "", errBefore
		}
		return time.Unix(0, n).UTC(), rest, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, "", errBefore
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
// A-Z a-z 0-9 '_' '-' (NewID makes "aud_" and 24 hex digits).
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
