package state

import "strings"

// A dialect adapts the one SQL text of each query to a backend. Queries
// are written for PostgreSQL with two extensions that the dialect
// resolves:
//
//   - $N placeholders, rewritten as SQLite's ?N. SQLite also reads $N,
//     but as a named parameter numbered by first appearance, which
//     breaks a query that uses $2 before $1 or one placeholder twice;
//     ?N is positional.
//   - $now, the database's own clock in unix nanoseconds (the stored
//     form of times). Lock expiry is decided with it, so that brokers
//     whose clocks disagree still agree on when a lock expires: every
//     expiry is computed and compared by the one clock they share.
//
// Both are left alone inside quoted strings, quoted identifiers and --
// comments.
type dialect struct {
	// positional rewrites $N as ?N.
	positional bool
	// now is the SQL expression $now stands for.
	now string
	// forUpdate ends a SELECT whose rows the transaction is about to
	// change, so that a concurrent writer waits instead of changing
	// them in between (a lost update). SQLite has no row locks and
	// needs none: its immediate transactions are exclusive.
	forUpdate string
}

var (
	// PostgreSQL: clock_timestamp() is the server's clock when the
	// expression is evaluated (now() would be the transaction's start).
	// extract(epoch ...) is numeric since PostgreSQL 14, exact to the
	// microsecond, so the product is too.
	postgresDialect = dialect{now: "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint", forUpdate: " FOR UPDATE"}
	// SQLite: its clock is the local one, the only clock the processes
	// sharing a database file can have. unixepoch('subsec') has
	// millisecond precision but is a REAL: rounding to whole
	// milliseconds before the multiplication keeps the float's error
	// out of the result.
	sqliteDialect = dialect{positional: true, now: "(CAST(round(unixepoch('subsec') * 1000) AS INTEGER) * 1000000)"}
)

// nowToken is how a query names the database's clock.
const nowToken = "$now"

// sql returns query in the dialect's form.
func (d dialect) sql(query string) string {
	return translate(query, d.positional, d.now)
}

// rebind rewrites only the placeholders, as SQLite's dialect does.
func rebind(query string) string { return translate(query, true, "") }

// translate rewrites $N as ?N when positional, and $now as now when now
// is not empty, outside quotes and comments.
func translate(query string, positional bool, now string) string {
	if !strings.Contains(query, "$") || (!positional && (now == "" || !strings.Contains(query, nowToken))) {
		return query
	}
	var b strings.Builder
	b.Grow(len(query))
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"':
			// A doubled quote inside ends and restarts the literal,
			// which copies it unchanged all the same.
			j := strings.IndexByte(query[i+1:], c)
			if j < 0 {
				b.WriteString(query[i:])
				return b.String()
			}
			b.WriteString(query[i : i+j+2])
			i += j + 1
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			j := strings.IndexByte(query[i:], '\n')
			if j < 0 {
				b.WriteString(query[i:])
				return b.String()
			}
			b.WriteString(query[i : i+j+1])
			i += j
		case c == '$' && positional && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9':
			b.WriteByte('?')
		case c == '$' && now != "" && strings.HasPrefix(query[i:], nowToken) && !identChar(query, i+len(nowToken)):
			b.WriteString(now)
			i += len(nowToken) - 1
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// identChar reports whether query[i] exists and continues an
// identifier, so that $nowhere is not read as $now.
func identChar(query string, i int) bool {
	if i >= len(query) {
		return false
	}
	c := query[i]
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
