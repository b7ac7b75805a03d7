package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
)

// maxCell caps one table cell: a reason or detail the server relays may
// be long, and a table is for reading.
const maxCell = 80

// printJSON writes v, an apiwire value as the server sent it, to stdout,
// with the characters that could rewrite a terminal or reorder what it
// shows escaped (escapeJSON).
func (r *runner) printJSON(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := r.env.Stdout.Write(escapeJSON(buf.Bytes()))
	return err
}

// printJSONLine writes v as one line of JSON (JSON Lines, for a
// stream of entries), escaped as printJSON's output is.
func (r *runner) printJSONLine(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := r.env.Stdout.Write(escapeJSON(buf.Bytes()))
	return err
}

// escapeJSON writes as \uXXXX the runes encoding/json leaves raw that a
// terminal acts on: DEL and the C1 controls (U+007F-U+009F; U+009B is a
// CSI on many terminals) and the bidirectional controls (U+200E, U+200F,
// U+202A-U+202E, U+2066-U+2069), which can make a name read as another.
// They occur only inside strings in encoded JSON (nothing else holds
// non-ASCII), so the result is the same JSON value.
func escapeJSON(data []byte) []byte {
	var out []byte
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if escapedRune(r) {
			if out == nil {
				out = append(make([]byte, 0, len(data)+16), data[:i]...)
			}
			out = fmt.Appendf(out, `\u%04x`, r)
		} else if out != nil {
			out = append(out, data[i:i+size]...)
		}
		i += size
	}
	if out == nil {
		return data
	}
	return out
}

func escapedRune(r rune) bool {
	switch {
	case r >= 0x7f && r <= 0x9f,
		r == 0x200e, r == 0x200f,
		r >= 0x202a && r <= 0x202e,
		r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
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
