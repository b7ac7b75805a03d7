package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
)

// maxCell caps one table cell: a reason or detail the server relays may
// be long, and a table is for reading.
const maxCell = 80

// printJSON writes v, an apiwire value as the server sent it, to stdout.
func (r *runner) printJSON(v any) error {
	enc := json.NewEncoder(r.env.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes rows under header to stdout, aligned in columns. Every
// cell is server text: it is made printable (no control characters,
// which could rewrite the terminal or break the alignment) and capped.
// No rows prints nothing but the note "no <what>".
func (r *runner) table(what string, header []string, rows [][]string) error {
	if len(rows) == 0 {
		r.note("no %s", what)
		return nil
	}
	tw := tabwriter.NewWriter(r.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// cell is s made safe for a table cell; "-" for nothing.
func cell(s string) string {
	s = apiclient.Printable(s, maxCell)
	if s == "" {
		return "-"
	}
	return s
}

// note tells the user, on stderr, what happened; --quiet silences it.
func (r *runner) note(format string, args ...any) {
	if r.quiet {
		return
	}
	fmt.Fprintf(r.env.Stderr, format+"\n", args...)
}

// warn prints a warning on stderr, --quiet or not.
func (r *runner) warn(format string, args ...any) {
	fmt.Fprintf(r.env.Stderr, "warning: "+format+"\n", args...)
}

// when formats a time for a table: UTC, to the second; "-" for none.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func whenPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return when(*t)
}

// joined joins names for a cell.
func joined(names []string) string { return strings.Join(names, ",") }

// quoted is server text for a confirmation line: printable and capped.
func quoted(s string) string { return apiclient.Printable(s, maxCell) }
