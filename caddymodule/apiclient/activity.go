package apiclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// ActivityQuery filters GET /api/v1/activity and its stream; zero
// fields do not filter. The server checks every value (400 with the
// reason).
type ActivityQuery struct {
	Session, Agent, Service, Host string
	// Decision is "forwarded", "refused" or "failed".
	Decision string
	// Code is a refusal's or failure's reason code ("uncovered_host").
	Code string
	// Status is an HTTP status such as 403.
	Status int
	// Since is an RFC 3339 time, or a duration such as 1h or 7d meaning
	// that long ago.
	Since string
	// Limit is the page size of a list (the server's default 100 when
	// 0, at most 1000); a stream has none.
	Limit int
	// Before is the previous page's NextBefore, or an RFC 3339 time; a
	// stream has none.
	Before string
}

// values is q as query parameters; page adds limit and before.
func (q ActivityQuery) values(page bool) url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"session": q.Session, "agent": q.Agent, "service": q.Service, "host": q.Host,
		"decision": q.Decision, "code": q.Code, "since": q.Since} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Status != 0 {
		v.Set("status", strconv.Itoa(q.Status))
	}
	if page {
		if q.Limit > 0 {
			v.Set("limit", strconv.Itoa(q.Limit))
		}
		if q.Before != "" {
			v.Set("before", q.Before)
		}
	}
	return v
}

// Activity returns one page of the activity log, newest first
// (GET /api/v1/activity). Entries is never nil on success.
func (c *Client) Activity(ctx context.Context, q ActivityQuery) (*apiwire.ActivityList, error) {
	u, err := c.endpoint("api", "v1", "activity")
	if err != nil {
		return nil, err
	}
	u.RawQuery = q.values(true).Encode()
	var out apiwire.ActivityList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Entries == nil {
		out.Entries = []apiwire.ActivityEntry{}
	}
	return &out, nil
}

// DefaultStreamIdle is how long a stream may stay silent before
// ActivityStream.Next gives up on it: the server sends a keep-alive
// every 15 s, so a longer silence is a server or network gone.
const DefaultStreamIdle = 45 * time.Second

// ErrStreamIdle is in the chain of Next's error when the server sent
// nothing, not even a keep-alive, for the stream's idle bound.
var ErrStreamIdle = errors.New("the activity stream went silent (no keep-alive from the server)")

// StreamEndedError is Next's error when the server ended the stream
// itself, because the caller's login or token stopped being valid.
type StreamEndedError struct {
	// Reason is the server's words, made safe to print.
	Reason string
}

func (e *StreamEndedError) Error() string { return "the server ended the activity stream: " + e.Reason }

// ActivityStream is an open GET /api/v1/activity/stream. It is not
// safe for concurrent use; Close it when done.
type ActivityStream struct {
	c      *Client
	body   io.ReadCloser
	lines  *bufio.Scanner
	ctx    context.Context
	cancel context.CancelCauseFunc
	idle   time.Duration
	timer  *time.Timer
	lastID string
	once   sync.Once
}

// StreamActivity opens the live activity stream (Server-Sent Events)
// with q's filters (Limit and Before do not apply). lastEventID, the
// LastEventID of a stream that closed, resumes after that entry; ""
// starts with what is new once the server answers. The wait for the
// answer is bounded by the client's timeout; after that the stream
// stays open until ctx ends, Close, the server closes it, or it is
// silent for DefaultStreamIdle.
func (c *Client) StreamActivity(ctx context.Context, q ActivityQuery, lastEventID string) (*ActivityStream, error) {
	if !headerSafe(lastEventID) {
		return nil, errors.New("invalid activity stream event id")
	}
	u, err := c.endpoint("api", "v1", "activity", "stream")
	if err != nil {
		return nil, err
	}
	u.RawQuery = q.values(false).Encode()
	sctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	// The client's own timeout would cut the stream: the wait for the
	// answer gets it instead.
	hc := *c.http
	hc.Timeout = 0
	answered := time.AfterFunc(c.timeout, func() { cancel(errAnswerTimeout) })
	resp, err := hc.Do(req)
	answered.Stop()
	if err != nil {
		defer cancel(nil)
		if errors.Is(context.Cause(sctx), errAnswerTimeout) {
			return nil, fmt.Errorf("the agent-vault server at %s did not answer within %v", shownAddr(c.base), c.timeout)
		}
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel(nil)
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
		return nil, c.errorFrom(&answer{status: resp.StatusCode, header: resp.Header, body: data})
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		cancel(nil)
		return nil, malformed(http.MethodGet, u)
	}
	s := &ActivityStream{c: c, body: resp.Body, lines: bufio.NewScanner(resp.Body), ctx: sctx, cancel: cancel,
		idle: c.streamIdle, lastID: lastEventID}
	if s.idle <= 0 {
		s.idle = DefaultStreamIdle
	}
	s.lines.Buffer(make([]byte, 0, 4096), MaxResponseBytes)
	s.timer = time.AfterFunc(s.idle, func() { cancel(ErrStreamIdle) })
	return s, nil
}

// errAnswerTimeout cancels a stream request whose answer is late.
var errAnswerTimeout = errors.New("no answer in time")

// Next returns the next entry, oldest first. It returns io.EOF when the
// server closed the stream without ending it (a config reload: resume
// with LastEventID), a *StreamEndedError when the server ended it, an
// error holding ErrStreamIdle when it went silent, and ctx's error
// once ctx ends.
func (s *ActivityStream) Next() (apiwire.ActivityEntry, error) {
	var event, id string
	var data bytes.Buffer
	for s.lines.Scan() {
		s.timer.Reset(s.idle)
		line := s.lines.Text()
		if line == "" { // the end of an event
			if event == "" && data.Len() == 0 {
				continue
			}
			if id != "" {
				s.lastID = id
			}
			switch event {
			case "activity":
				var e apiwire.ActivityEntry
				if err := json.Unmarshal(data.Bytes(), &e); err != nil {
					return e, errors.New("malformed event in the activity stream")
				}
				return e, nil
			case "end":
				var end struct {
					Reason string `json:"reason"`
				}
				_ = json.Unmarshal(data.Bytes(), &end)
				reason := s.c.sanitize(end.Reason)
				if reason == "" {
					reason = "no reason given"
				}
				return apiwire.ActivityEntry{}, &StreamEndedError{Reason: reason}
			}
			event, id = "", ""
			data.Reset()
			continue
		}
		if strings.HasPrefix(line, ":") { // a comment: the keep-alive
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			event = value
		case "id":
			id = value
		case "data":
			if data.Len()+len(value) >= MaxResponseBytes {
				return apiwire.ActivityEntry{}, fmt.Errorf("an event of the activity stream is larger than %d bytes", MaxResponseBytes)
			}
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		}
	}
	return apiwire.ActivityEntry{}, s.readError()
}

// readError is why the stream stopped giving lines.
func (s *ActivityStream) readError() error {
	if cause := context.Cause(s.ctx); cause != nil {
		if errors.Is(cause, ErrStreamIdle) {
			return fmt.Errorf("%w for %v", ErrStreamIdle, s.idle)
		}
		return cause
	}
	if err := s.lines.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("a line of the activity stream is longer than %d bytes", MaxResponseBytes)
		}
		return fmt.Errorf("reading the activity stream from the agent-vault server at %s: %w", shownAddr(s.c.base), s.c.transportError(s.ctx, err))
	}
	return io.EOF
}

// LastEventID is the id of the last event read: pass it to
// StreamActivity to resume after it.
func (s *ActivityStream) LastEventID() string { return s.lastID }

// Close closes the stream; later calls do nothing.
func (s *ActivityStream) Close() error {
	var err error
	s.once.Do(func() {
		s.timer.Stop()
		s.cancel(nil)
		err = s.body.Close()
	})
	return err
}

// headerSafe reports whether an event id the server sent may go back
// in a header: at most maxIDLen visible ASCII characters.
func headerSafe(id string) bool {
	if len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return true
}
