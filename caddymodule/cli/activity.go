package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// reconnectDelay is how long --follow waits before it opens the stream
// again after the server closed it (a config reload), so that a server
// that keeps closing it is not hammered.
const reconnectDelay = time.Second

// activityHeader is the columns of an entry, in the table and in
// --follow's lines.
var activityHeader = []string{"TIME", "DECISION", "STATUS", "AGENT", "SERVICE", "REQUEST", "CODE", "REASON"}

// followWidths are the columns' widths in --follow's lines, which are
// printed one by one and cannot be aligned as a table is: each cell is
// padded to its width, then two spaces, as the table's are; a longer
// cell pushes the rest along. The last column has none.
var followWidths = []int{20, 9, 6, 14, 14, 40, 14}

func (r *runner) activityCommand() *cobra.Command {
	var q apiclient.ActivityQuery
	var follow bool
	cmd := &cobra.Command{
		Use: "activity [--session S] [--agent A] [--service V] [--host H] [--decision forwarded|refused|failed] [--code C] [--status N] [--since 1h|TIME] [--limit N] [--before CURSOR] [--follow]",
		Long: `Lists what the proxy did, newest first: every request it forwarded,
refused or failed, with its time, decision, status, agent, service,
method, host and path (never the query), the reason code and the reason
the agent was given. --json prints every field (session, broker
instance, bytes, duration, the names of the credentials used, client
address), one JSON object a line. One page at a time: the next page's
--before is printed on stderr when there is one.

--follow prints the entries recorded from now on, as they are recorded
(by any broker of a cluster), until interrupted; it ends with exit 1
when the server ends the stream because the login or token is no longer
valid, and reconnects (resuming after the last entry) when the server
closes it for a config reload.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkActivityFlags(cmd, q, follow); err != nil {
				return err
			}
			c, err := r.client()
			if err != nil {
				return err
			}
			if follow {
				return r.followActivity(cmd.Context(), c, q)
			}
			page, err := c.Activity(cmd.Context(), q)
			if err != nil {
				return err
			}
			if err := r.printActivity(page.Entries); err != nil {
				return err
			}
			r.notePage("activity", page.NextBefore, true)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&q.Session, "session", "", "only this session's entries (its id)")
	fl.StringVar(&q.Agent, "agent", "", "only this agent's entries")
	fl.StringVar(&q.Service, "service", "", "only entries of this service")
	fl.StringVar(&q.Host, "host", "", "only requests to this host (any case, with or without a trailing dot)")
	fl.StringVar(&q.Decision, "decision", "", "only forwarded, refused or failed requests")
	fl.StringVar(&q.Code, "code", "", "only this reason code, e.g. uncovered_host (see the README's Activity log)")
	fl.IntVar(&q.Status, "status", 0, "only entries with this HTTP status, e.g. 403")
	fl.StringVar(&q.Since, "since", "", "only entries since this RFC 3339 time, or this long ago (1h, 7d)")
	pageFlags(cmd, &q.Limit, &q.Before)
	fl.BoolVarP(&follow, "follow", "f", false, "print new entries as they are recorded, until interrupted")
	return cmd
}

// checkActivityFlags refuses, before any I/O, what the server would:
// a decision, code or status outside its sets, a --since that is
// neither a time nor a duration, a --limit out of range. A filter given
// empty (an unset variable) is refused too: it would list everything.
// --follow shows what is new, so the paging flags and --since do not
// go with it.
func checkActivityFlags(cmd *cobra.Command, q apiclient.ActivityQuery, follow bool) error {
	fl := cmd.Flags()
	for _, name := range []string{"session", "agent", "service", "host", "decision", "code", "since", "before"} {
		if f := fl.Lookup(name); f.Changed && f.Value.String() == "" {
			return usagef("--%s is empty (an unset variable?): give a value, or leave --%s out", name, name)
		}
	}
	if q.Decision != "" && !activity.Decision(q.Decision).Valid() {
		return usagef("--decision: want %s, %s or %s", activity.Forwarded, activity.Refused, activity.Failed)
	}
	if q.Code != "" && !slices.Contains(activity.Codes, q.Code) {
		return usagef("--code: want one of %s", strings.Join(activity.Codes, ", "))
	}
	if fl.Changed("status") && (q.Status < 100 || q.Status > 999) {
		return usagef("--status %d: want an HTTP status such as 403", q.Status)
	}
	if q.Since != "" {
		if d, err := caddy.ParseDuration(q.Since); err == nil {
			if d <= 0 {
				return usagef("--since: a duration must be positive (1h: the last hour)")
			}
		} else if _, err := time.Parse(time.RFC3339Nano, q.Since); err != nil {
			return usagef("--since: want an RFC 3339 time such as 2026-01-02T15:04:05Z or a duration such as 1h or 7d")
		}
	}
	if fl.Changed("limit") && (q.Limit < 1 || q.Limit > 1000) {
		return usagef("--limit %d: want 1 to 1000", q.Limit)
	}
	if follow {
		for _, name := range []string{"limit", "before", "since"} {
			if fl.Changed(name) {
				return usagef("--follow prints new entries only; --%s is for listing the past (leave out one or the other)", name)
			}
		}
	}
	return nil
}

// printActivity prints entries as a table, or one JSON object a line
// with --json.
func (r *runner) printActivity(entries []apiwire.ActivityEntry) error {
	if r.json {
		for _, e := range entries {
			if err := r.printJSONLine(e); err != nil {
				return err
			}
		}
		return nil
	}
	rows := make([][]string, 0, len(entries))
	for _, e := range entries {
		rows = append(rows, activityRow(e))
	}
	return r.table("activity entries", activityHeader, rows)
}

// activityRow is an entry's cells, in activityHeader's order.
func activityRow(e apiwire.ActivityEntry) []string {
	req := e.Method + " " + e.Host
	if e.Port != 0 && e.Port != 443 && e.Port != 80 {
		req += ":" + strconv.Itoa(e.Port)
	}
	req += e.Path
	return []string{when(e.At), e.Decision, strconv.Itoa(e.Status), e.Agent, e.Service, req, e.Code, e.Reason}
}

// followActivity prints the stream's entries until an interrupt
// (SIGINT, SIGTERM: exit 0) or the server ends it (exit 1, with its
// reason). When the server closes it without ending it (a config
// reload), it opens it again after reconnectDelay, after the last
// entry printed.
func (r *runner) followActivity(ctx context.Context, c *apiclient.Client, q apiclient.ActivityQuery) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	lastID := ""
	for opened := false; ; opened = true {
		s, err := c.StreamActivity(ctx, q, lastID)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !opened {
			r.note("following the activity log (Ctrl-C to stop)")
			if !r.json {
				if err := r.followLine(activityHeader); err != nil {
					s.Close()
					return err
				}
			}
		}
		err = r.printStream(s)
		lastID = s.LastEventID()
		s.Close()
		var ended *apiclient.StreamEndedError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &ended):
			return fmt.Errorf("%s; log in again (or check the token) and rerun %s activity --follow", ended.Error(), progName)
		case errors.Is(err, apiclient.ErrStreamIdle):
			r.note("%s; reconnecting", err)
		case errors.Is(err, io.EOF):
			r.note("the server closed the activity stream (a config reload?); reconnecting")
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.after(reconnectDelay):
		}
	}
}

// printStream prints s's entries until it stops, and returns why.
func (r *runner) printStream(s *apiclient.ActivityStream) error {
	for {
		e, err := s.Next()
		if err != nil {
			return err
		}
		if r.json {
			err = r.printJSONLine(e)
		} else {
			err = r.followLine(activityRow(e))
		}
		if err != nil {
			return err
		}
	}
}

// followLine prints one line of --follow's output: cells made safe and
// padded to followWidths.
func (r *runner) followLine(cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		c = cell(c)
		if i == len(cells)-1 {
			b.WriteString(c)
			break
		}
		b.WriteString(c)
		b.WriteString(strings.Repeat(" ", max(0, followWidths[i]-len([]rune(c)))+2))
	}
	_, err := fmt.Fprintln(r.env.Stdout, strings.TrimRight(b.String(), " "))
	return err
}

// after is the run's clock for waits (Env.After).
func (r *runner) after(d time.Duration) <-chan time.Time {
	if r.env.After != nil {
		return r.env.After(d)
	}
	return time.After(d)
}
