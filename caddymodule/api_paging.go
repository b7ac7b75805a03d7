package caddymodule

// Paging of the API's lists newest first (the audit trail, the activity
// log): ?limit= and ?before= in, next_before out, with the one cursor
// codec (internal/pagecursor).

import (
	"net/http"
	"net/url"

	"github.com/agentvault/caddy-agent-vault/internal/pagecursor"
)

// readPage reads a list's ?limit= (1..1000, default 100) and ?before=
// (a previous page's next_before or an RFC 3339 time; nil when absent).
// Any error is 400.
func readPage(q url.Values) (limit int, before *pagecursor.Cursor, err error) {
	if limit, err = pageLimit(q.Get("limit")); err != nil {
		return 0, nil, err
	}
	if before, err = readCursor("before", q.Get("before")); err != nil {
		return 0, nil, err
	}
	return limit, before, nil
}

// readCursor parses the cursor s given as name (a query parameter or a
// header such as Last-Event-ID); nil when s is empty. Any error is 400.
func readCursor(name, s string) (*pagecursor.Cursor, error) {
	if s == "" {
		return nil, nil
	}
	at, id, err := pagecursor.Parse(s)
	if err != nil {
		return nil, fail(http.StatusBadRequest, "%s: %v", name, err)
	}
	return &pagecursor.Cursor{At: at, ID: id}, nil
}

// nextBefore is the next_before of a page: a full page may have a next
// one (at worst it is empty), so it is the last entry's cursor; "" for
// a short page.
func nextBefore[E any](page []E, limit int, pos func(E) pagecursor.Cursor) string {
	if len(page) == 0 || len(page) < limit {
		return ""
	}
	c := pos(page[len(page)-1])
	return pagecursor.Encode(c.At, c.ID)
}
