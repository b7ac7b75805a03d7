package caddymodule

// The activity log: GET /api/v1/activity (filters, cursor) and the
// live stream GET /api/v1/activity/stream (Server-Sent Events).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/internal/pagecursor"
)

// Stream pacing: it polls the database (so every broker's entries
// appear), re-checks the caller each poll, and sends a comment when
// idle so that proxies and browsers keep the connection.
const (
	defaultStreamPoll = time.Second
	streamKeepAlive   = 15 * time.Second
	// maxStreams bounds the open streams of this broker (429 beyond):
	// each polls the database every second. maxStreamsPerCaller bounds
	// those of one operator, token or agent, so that one caller cannot
	// take them all.
	maxStreams          = 64
	maxStreamsPerCaller = 8
	// streamWriteTimeout bounds each write to a stream: a client that
	// stops reading is dropped instead of holding its stream (and its
	// share of maxStreams) forever, unchecked.
	streamWriteTimeout = 30 * time.Second
)

// openStreams counts this process's open activity streams, in all and
// per caller.
var openStreams streamCounts

// streamReads lets at most maxStreamReads streams of this process read
// the log at once; the others wait their turn. A stream resumed from an
// old cursor reads up to ten thousand entries a poll, so without it a
// few of them would hold the database (SQLite has one writer, and the
// proxy's activity and sessions write there too).
const maxStreamReads = 2

var streamReads = make(chan struct{}, maxStreamReads)

type streamCounts struct {
	mu       sync.Mutex
	total    int
	byCaller map[string]int
}

// open takes a stream for caller, or reports that a bound is reached.
func (s *streamCounts) open(caller string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= maxStreams || s.byCaller[caller] >= maxStreamsPerCaller {
		return nil, false
	}
	if s.byCaller == nil {
		s.byCaller = make(map[string]int)
	}
	s.total++
	s.byCaller[caller]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.total--
		if s.byCaller[caller]--; s.byCaller[caller] == 0 {
			delete(s.byCaller, caller)
		}
	}, true
}

// maxFilterValue bounds a text filter (no stored value is longer).
const maxFilterValue = 256

// activityFilter reads the filters both routes share: session, agent,
// service, host, decision, status, code, since. Any error is 400.
func (a *API) activityFilter(r *http.Request) (activity.Filter, error) {
	q := r.URL.Query()
	f := activity.Filter{Session: q.Get("session"), Agent: q.Get("agent"), Service: q.Get("service"), Host: q.Get("host"),
		Code: q.Get("code")}
	for name, v := range map[string]string{"session": f.Session, "agent": f.Agent, "service": f.Service, "host": f.Host} {
		if len(v) > maxFilterValue {
			return f, fail(http.StatusBadRequest, "%s: at most %d bytes", name, maxFilterValue)
		}
	}
	// Entries hold canonical hosts (hostname.Normalize): so does the
	// filter, when it is a host at all.
	if h, _, err := hostname.Canonical(f.Host); err == nil {
		f.Host = h
	}
	if d := q.Get("decision"); d != "" {
		if f.Decision = activity.Decision(d); !f.Decision.Valid() {
			return f, fail(http.StatusBadRequest, "decision: want one of %s, %s, %s", activity.Forwarded, activity.Refused, activity.Failed)
		}
	}
	if f.Code != "" && !slices.Contains(activity.Codes, f.Code) {
		return f, fail(http.StatusBadRequest, "code: want one of %s", strings.Join(activity.Codes, ", "))
	}
	if s := q.Get("status"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 || n > 999 {
			return f, fail(http.StatusBadRequest, "status: want an HTTP status such as 403")
		}
		f.Status = n
	}
	if s := q.Get("since"); s != "" {
		// caddy.ParseDuration, like every duration of the API (7d works).
		if d, err := caddy.ParseDuration(s); err == nil {
			if d <= 0 {
				return f, fail(http.StatusBadRequest, "since: a duration must be positive (1h: the last hour)")
			}
			f.Since = a.now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			f.Since = t
		} else {
			return f, fail(http.StatusBadRequest, "since: want an RFC 3339 time such as 2026-01-02T15:04:05Z or a duration such as 1h or 7d")
		}
	}
	return f, nil
}

// listActivity answers GET /api/v1/activity?session=&agent=&service=
// &host=&decision=&status=&code=&since=&before=&limit=: entries newest
// first, at most limit (1..1000, default 100), older than before (the
// next_before of the previous page, or an RFC 3339 time).
func (a *API) listActivity(w http.ResponseWriter, r *http.Request) {
	f, err := a.activityFilter(r)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	if f.Limit, f.Before, err = readPage(r.URL.Query()); err != nil {
		a.answerError(w, r, err)
		return
	}
	if a.deps.activity == nil {
		a.answerError(w, r, fail(http.StatusServiceUnavailable, "the activity log is not available"))
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	entries, err := a.deps.activity.ListActivity(ctx, f)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	out := apiwire.ActivityList{Entries: make([]apiwire.ActivityEntry, 0, len(entries)),
		NextBefore: nextBefore(entries, f.Limit, func(e activity.Entry) activity.Cursor { return activity.Cursor{At: e.At, ID: e.ID} })}
	for _, e := range entries {
		out.Entries = append(out.Entries, wireActivity(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// wireActivity is an entry as the API shows it.
func wireActivity(e activity.Entry) apiwire.ActivityEntry {
	creds := e.Credentials
	if creds == nil {
		creds = []string{}
	}
	return apiwire.ActivityEntry{ID: e.ID, At: e.At, Instance: e.Instance, Session: e.Session, Agent: e.Agent,
		Service: e.Service, Method: e.Method, Host: e.Host, Port: e.Port, Path: e.Path, Status: e.Status,
		Decision: string(e.Decision), Code: e.Code, Reason: e.Reason, BytesIn: e.BytesIn, BytesOut: e.BytesOut,
		DurationMS: float64(e.Duration) / float64(time.Millisecond), Credentials: creds, Client: e.Client}
}

// streamActivity answers GET /api/v1/activity/stream (the list's
// filters but before and limit) with Server-Sent Events: each new
// entry, oldest first, as "id: <cursor>", "event: activity" and
// "data: <ActivityEntry JSON>"; a ": keep-alive" comment every 15s. A
// Last-Event-ID header (a reconnect) or else ?after=<cursor> (a page
// that lists entries up to that one: EventSource sets no header on its
// first connect) starts after that entry; without either it starts
// with what is new when it answers, as it reads the log before it
// answers 200. It reads the database every second, so every broker's
// entries appear, and it ends when the caller's login or token stops
// being valid (checked at every poll) or when this config is unloaded.
//
// Entries are ordered, and after=, since= and before= (times and
// cursors alike) compared, by each entry's At, the clock of the broker
// that recorded it: in a cluster whose clocks differ, an entry can fall
// on the other side of a time or cursor, and one more than the
// Follower's lookback (activity.DefaultLookback) behind the newest
// entry the stream has seen is never streamed (it is still listed).
func (a *API) streamActivity(w http.ResponseWriter, r *http.Request) {
	f, err := a.activityFilter(r)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	after, err := streamStart(r)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	if a.deps.activity == nil {
		a.answerError(w, r, fail(http.StatusServiceUnavailable, "the activity log is not available"))
		return
	}
	c := callerOf(r)
	release, ok := openStreams.open(c.ActorKind() + ":" + c.Actor())
	if !ok {
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many open activity streams (at most %d per caller, %d on this broker); close one or retry later",
			maxStreamsPerCaller, maxStreams))
		return
	}
	defer release()

	fl := activity.NewFollower(a.deps.activity, f, after, a.now(), 0)
	poll := func() ([]activity.Entry, error) {
		ctx, cancel := writeContext(r)
		defer cancel()
		select {
		case streamReads <- struct{}{}:
			defer func() { <-streamReads }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return fl.Poll(ctx)
	}
	// The first read before the answer: once the client has it, what
	// is written is news to this stream.
	entries, err := poll()
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	// A stream outlives the server's write timeout; each round of
	// writes gets its own.
	writeBy := func() { _ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) }
	writeBy()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte(": stream open\n\n")); err != nil {
		return
	}
	every := a.deps.streamPoll
	if every <= 0 {
		every = defaultStreamPoll
	}
	ticks, stop := a.streamTicker(every)
	defer stop()
	lastSent := a.now()
	failing := false
	for {
		writeBy()
		for _, e := range entries {
			data, err := json.Marshal(wireActivity(e))
			if err != nil {
				return
			}
			if _, err := w.Write([]byte("id: " + pagecursor.Encode(e.At, e.ID) + "\nevent: activity\ndata: " + string(data) + "\n\n")); err != nil {
				return
			}
			lastSent = a.now()
		}
		if a.now().Sub(lastSent) >= streamKeepAlive {
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			lastSent = a.now()
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-a.life.Done(): // a reload: the client reconnects to the new config
			return
		case <-ticks:
		}
		entries, err = poll()
		switch {
		case err != nil && !failing:
			a.logger.Warn("activity stream: reading the log failed; retrying", zap.Error(err))
			failing = true
		case err == nil:
			failing = false
		}
		// The caller may have logged out, been deleted or lost the
		// role since: the stream ends with its right to read. Checked
		// after the read, so that nothing read is sent after a logout.
		if !a.stillAllowed(r, identity.ReadAll) {
			writeBy()
			_, _ = w.Write([]byte("event: end\ndata: {\"reason\":\"the login or token is no longer valid\"}\n\n"))
			_ = rc.Flush()
			return
		}
	}
}

// streamTicker is the stream's poll ticker (apiDeps.streamTicks).
func (a *API) streamTicker(every time.Duration) (<-chan time.Time, func()) {
	if a.deps.streamTicks != nil {
		return a.deps.streamTicks(every)
	}
	t := time.NewTicker(every)
	return t.C, t.Stop
}

// streamStart is the cursor a stream starts after: Last-Event-ID (a
// reconnect, so newer than the page's), else ?after=; nil without
// either. Either is a cursor of this API (an event's id, a page's
// next_before) or an RFC 3339 time (from that time on). Any error is
// 400.
func streamStart(r *http.Request) (*activity.Cursor, error) {
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		return readCursor("Last-Event-ID", last)
	}
	return readCursor("after", r.URL.Query().Get("after"))
}

// stillAllowed resolves r's credentials again and checks perm.
func (a *API) stillAllowed(r *http.Request, perm identity.Permission) bool {
	c, err := a.resolve(r, perm)
	return err == nil && identity.Allowed(c.Principal, perm) == nil
}

// activityStats answers GET /api/v1/activity/stats: this broker's
// activity Recorder's counts (entries are written asynchronously; these
// say how many were lost).
func (a *API) activityStats(w http.ResponseWriter, _ *http.Request) {
	var st activity.Stats
	if a.deps.activityStats != nil {
		st = a.deps.activityStats()
	}
	writeJSON(w, http.StatusOK, apiwire.ActivityStats{Written: st.Written, Dropped: st.Dropped, Failed: st.Failed, Queued: st.Queued})
}
