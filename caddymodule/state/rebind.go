package state

import "strings"

// rebind rewrites PostgreSQL's $N placeholders as SQLite's ?N, so that
// every query is written once. SQLite also reads $N, but as a named
// parameter numbered by first appearance, which breaks a query that
// uses $2 before $1 or one placeholder twice; ?N is positional.
// Placeholders inside quoted strings, quoted identifiers and -- comments
// are left alone.
func rebind(query string) string {
	if !strings.Contains(query, "$") {
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
		case c == '$' && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9':
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
