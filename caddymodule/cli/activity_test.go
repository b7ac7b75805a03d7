package cli

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

var (
	forwarded = apiwire.ActivityEntry{ID: "e2", At: t1, Instance: "b1", Session: "ses_1", Agent: "ci-bot", Service: "github",
		Method: "GET", Host: "api.github.com", Port: 443, Path: "/user", Status: 200, Decision: "forwarded",
		Credentials: []string{"GITHUB_TOKEN"}, Client: "127.0.0.1", DurationMS: 12.5}
	refusedEntry = apiwire.ActivityEntry{ID: "e1", At: t0, Instance: "b1", Session: "ses_1", Agent: "ci-bot",
		Method: "CONNECT", Host: "evil.example", Port: 8443, Status: 403, Decision: "refused", Code: "uncovered_host",
		Reason: "no service covers evil.example:8443\u009b", Credentials: []string{}, Client: "127.0.0.1"}
)

func TestActivityList(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/activity", 200, apiwire.ActivityList{Entries: []apiwire.ActivityEntry{forwarded, refusedEntry}, NextBefore: "1893553445000000000_e1"})
	r := run(t, s, "activity", "--agent", "ci-bot", "--decision", "refused", "--status", "403", "--since", "7d", "--limit", "2",
		"--host", "API.github.com.", "--code", "uncovered_host", "--session", "ses_1", "--service", "github", "--before", "9_x")
	r.want(t, ExitOK)
	want := "TIME                  DECISION   STATUS  AGENT   SERVICE  REQUEST                    CODE            REASON\n" +
		"2030-01-02T04:04:05Z  forwarded  200     ci-bot  github   GET api.github.com/user    -               -\n" +
		"2030-01-02T03:04:05Z  refused    403     ci-bot  -        CONNECT evil.example:8443  uncovered_host  no service covers evil.example:8443\n"
	r.stdoutIs(t, want)
	r.stderrHas(t, "older entries: agent-vault activity --before 1893553445000000000_e1")
	if q := s.only(t).query; q != "agent=ci-bot&before=9_x&code=uncovered_host&decision=refused&host=API.github.com.&limit=2&service=github&session=ses_1&since=7d&status=403" {
		t.Errorf("query %q", q)
	}
}

// --json is one entry a line, each exactly the wire type, with the
// runes a terminal acts on escaped.
func TestActivityJSONLines(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/activity", 200, apiwire.ActivityList{Entries: []apiwire.ActivityEntry{forwarded, refusedEntry}})
	r := run(t, s, "activity", "--json")
	r.want(t, ExitOK)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), r.stdout)
	}
	for i, want := range []apiwire.ActivityEntry{forwarded, refusedEntry} {
		var got apiwire.ActivityEntry
		decodeStrict(t, lines[i], &got)
		if got.ID != want.ID || got.Reason != want.Reason || !got.At.Equal(want.At) {
			t.Errorf("line %d: %+v, want %+v", i, got, want)
		}
	}
	if !strings.Contains(lines[1], `\u009b`) || strings.Contains(r.stdout, "\u009b") {
		t.Errorf("a C1 control is printed raw: %q", lines[1])
	}
	none := newServer(t)
	none.answer("GET /api/v1/activity", 200, apiwire.ActivityList{Entries: []apiwire.ActivityEntry{}})
	r = run(t, none, "activity")
	r.want(t, ExitOK)
	if r.stdout != "" || !strings.Contains(r.stderr, "no activity entries") {
		t.Errorf("no entries: %q %q", r.stdout, r.stderr)
	}
}

// Bad flags are usage errors (exit 2) and nothing is sent.
func TestActivityUsageErrors(t *testing.T) {
	s := newServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--decision", "allowed"}, "--decision: want forwarded, refused or failed"},
		{[]string{"--code", "nope"}, "--code: want one of auth, uncovered_host"},
		{[]string{"--status", "42"}, "--status 42: want an HTTP status"},
		{[]string{"--status", "0"}, "--status 0"},
		{[]string{"--since", "yesterday"}, "--since: want an RFC 3339 time"},
		{[]string{"--since", "-1h"}, "--since: a duration must be positive"},
		{[]string{"--limit", "0"}, "--limit 0: want 1 to 1000"},
		{[]string{"--limit", "1001"}, "--limit 1001"},
		{[]string{"--agent", ""}, "--agent is empty"},
		{[]string{"--host", ""}, "--host is empty"},
		{[]string{"--follow", "--limit", "5"}, "--follow prints new entries only; --limit"},
		{[]string{"--follow", "--since", "1h"}, "--since is for listing the past"},
		{[]string{"-f", "--before", "1_x"}, "--before"},
		{[]string{"extra"}, "too many arguments"},
	} {
		r := run(t, s, append([]string{"activity"}, tc.args...)...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("activity %v: exit %d, stderr %q; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	s.none(t)
}

// streamServer answers GET /api/v1/activity/stream with each of
// scripts in turn (one per connection): its events, then it closes the
// stream, or holds it open until the client goes when hold is set.
type streamServer struct {
	*server
	mu      sync.Mutex
	scripts []streamScript
	lastIDs []string // the Last-Event-ID of each connection
}

type streamScript struct {
	events string
	hold   bool
}

func newStreamServer(t *testing.T, scripts ...streamScript) *streamServer {
	ss := &streamServer{server: newServer(t), scripts: scripts}
	ss.mux.HandleFunc("GET /api/v1/activity/stream", func(w http.ResponseWriter, r *http.Request) {
		ss.mu.Lock()
		ss.lastIDs = append(ss.lastIDs, r.Header.Get("Last-Event-ID"))
		if len(ss.scripts) == 0 {
			ss.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		sc := ss.scripts[0]
		ss.scripts = ss.scripts[1:]
		ss.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, ": stream open\n\n"+sc.events)
		w.(http.Flusher).Flush()
		if sc.hold {
			<-r.Context().Done()
		}
	})
	return ss
}

func event(id, data string) string { return "id: " + id + "\nevent: activity\ndata: " + data + "\n\n" }

// --follow prints each entry as it comes; when the server closes the
// stream it reconnects after the last entry (waiting reconnectDelay on
// the run's clock); when the server ends it (the login ended) it stops
// with exit 1 and says why.
func TestActivityFollow(t *testing.T) {
	ss := newStreamServer(t,
		streamScript{events: event("1_a", `{"id":"a","at":"2030-01-02T03:04:05.5Z","decision":"forwarded","status":200,"method":"GET","host":"api.github.com","port":443,"path":"/one","agent":"ci-bot"}`)},
		streamScript{events: event("2_b", `{"id":"b","decision":"refused","status":403,"method":"CONNECT","host":"evil.example","port":443,"code":"uncovered_host","reason":"no service"}`) +
			"event: end\ndata: {\"reason\":\"the login or token is no longer valid\"}\n\n"})
	var waits []time.Duration
	after := func(d time.Duration) <-chan time.Time {
		waits = append(waits, d)
		ch := make(chan time.Time, 1)
		ch <- time.Time{}
		return ch
	}
	r := call{after: after}.run(t, ss.server, "activity", "--follow", "--agent", "ci-bot")
	r.want(t, ExitFailed)
	want := "TIME                  DECISION   STATUS  AGENT           SERVICE         REQUEST                                   CODE            REASON\n" +
		"2030-01-02T03:04:05Z  forwarded  200     ci-bot          -               GET api.github.com/one                    -               -\n" +
		"-                     refused    403     -               -               CONNECT evil.example                      uncovered_host  no service\n"
	r.stdoutIs(t, want)
	r.stderrHas(t, "following the activity log", "reconnecting", "the server ended the activity stream: the login or token is no longer valid", "log in again")
	if len(ss.lastIDs) != 2 || ss.lastIDs[0] != "" || ss.lastIDs[1] != "1_a" {
		t.Errorf("Last-Event-IDs %q, want the reconnect to resume after 1_a", ss.lastIDs)
	}
	if len(waits) != 1 || waits[0] != reconnectDelay {
		t.Errorf("waits %v, want one of %v", waits, reconnectDelay)
	}
	if q := ss.requests()[0].query; q != "agent=ci-bot" {
		t.Errorf("query %q", q)
	}
}

// notifyWriter reports on seen when what was written holds want.
type notifyWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// An interrupt (the run's context ending) stops --follow with exit 0;
// --json prints one object a line.
func TestActivityFollowInterrupted(t *testing.T) {
	ss := newStreamServer(t, streamScript{events: event("1_a", `{"id":"a","decision":"forwarded","path":"/one"}`), hold: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &notifyWriter{want: "\n", seen: make(chan struct{})}
	done := make(chan result, 1)
	go func() { done <- call{ctx: ctx, stdout: w}.run(t, ss.server, "activity", "--follow", "--json") }()
	select {
	case <-w.seen:
	case r := <-done:
		t.Fatalf("--follow ended before the interrupt: %+v", r)
	case <-time.After(10 * time.Second): // a bound on a broken test, not a wait
		t.Fatal("--follow printed nothing")
	}
	cancel()
	r := <-done
	r.want(t, ExitOK)
	var e apiwire.ActivityEntry
	decodeStrict(t, r.stdout, &e)
	if e.ID != "a" || e.Path != "/one" {
		t.Errorf("printed %+v", e)
	}
}

// A refusal to open the stream is the server's words, exit 1.
func TestActivityFollowRefused(t *testing.T) {
	s := newServer(t)
	s.answer("GET /api/v1/activity/stream", 429, apiwire.Error{Error: "too many open activity streams (at most 8 per caller)"})
	r := run(t, s, "activity", "--follow")
	r.want(t, ExitFailed)
	r.stderrHas(t, "too many open activity streams (at most 8 per caller) (HTTP 429)")
}
