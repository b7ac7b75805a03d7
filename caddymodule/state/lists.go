package state

import (
	"strconv"
	"strings"
)

// Page sizes of ListAccessRequests and ListAudit.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// pageLimit clamps a requested page size to 1..MaxPageLimit, 0 meaning
// DefaultPageLimit: no caller can make one query read the whole table.
func pageLimit(n int) int {
	switch {
	case n == 0:
		return DefaultPageLimit
	case n < 1:
		return 1
	case n > MaxPageLimit:
		return MaxPageLimit
	}
	return n
}

// where builds the WHERE clause of a filtered list: $1, $2... in the
// order the conditions are added.
type where struct {
	conds []string
	args  []any
}

// arg adds a value and returns its placeholder.
func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

// equal adds column = value, unless value is empty (no filter).
func (w *where) equal(column, value string) {
	if value != "" {
		w.conds = append(w.conds, column+" = "+w.arg(value))
	}
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}
