package apiclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sse serves the stream text events, then holds the stream open until
// the client goes (hold) or closes it.
func sse(events string, hold bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, events)
		w.(http.Flusher).Flush()
		if hold {
			<-r.Context().Done()
		}
	}
}

// The stream's events come back in order, comments (keep-alives) and
// unknown events skipped; the server's end event is a
// *StreamEndedError with its reason; the filters, the token and a
// Last-Event-ID go with the request.
func TestStreamActivity(t *testing.T) {
	var got *http.Request
	events := ": stream open\n\n" +
		"id: 1_a\nevent: activity\ndata: {\"id\":\"a\",\"decision\":\"forwarded\",\"path\":\"/x\"}\n\n" +
		": keep-alive\n\n" +
		"id: 2_b\nevent: other\ndata: {}\n\n" +
		"id: 3_c\r\nevent: activity\r\ndata: {\"id\":\"c\",\r\ndata: \"decision\":\"refused\"}\r\n\r\n" +
		"event: end\ndata: {\"reason\":\"the login or token is no longer valid \\u001b[31m " + testToken + "\"}\n\n"
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		got = r
		sse(events, false)(w, r)
	})
	s, err := f.client(t).StreamActivity(context.Background(), ActivityQuery{Agent: "ci", Decision: "refused", Limit: 5, Before: "x"}, "0_z")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got.URL.Path != "/api/v1/activity/stream" || got.URL.RawQuery != "agent=ci&decision=refused" {
		t.Errorf("sent %s?%s (a stream has no limit or before)", got.URL.Path, got.URL.RawQuery)
	}
	if got.Header.Get("Authorization") != "Bearer "+testToken || got.Header.Get("Last-Event-ID") != "0_z" || got.Header.Get("Accept") != "text/event-stream" {
		t.Errorf("headers %v", got.Header)
	}
	e, err := s.Next()
	if err != nil || e.ID != "a" || e.Path != "/x" || s.LastEventID() != "1_a" {
		t.Fatalf("first: %+v %v (last id %q)", e, err, s.LastEventID())
	}
	e, err = s.Next()
	if err != nil || e.ID != "c" || e.Decision != "refused" || s.LastEventID() != "3_c" {
		t.Fatalf("second (CRLF lines, data over two lines): %+v %v (last id %q)", e, err, s.LastEventID())
	}
	_, err = s.Next()
	var ended *StreamEndedError
	if !errors.As(err, &ended) || !strings.HasPrefix(ended.Reason, "the login or token is no longer valid") {
		t.Fatalf("end: %v", err)
	}
	if strings.Contains(ended.Reason, testToken) || strings.Contains(ended.Reason, "\x1b") {
		t.Errorf("the end reason is not made safe: %q", ended.Reason)
	}
}

// A stream the server closes without ending it is io.EOF (resume with
// LastEventID); a refusal is an *Error with the server's words; an
// answer that is not an event stream is refused.
func TestStreamActivityCloseAndErrors(t *testing.T) {
	f := newFake(t, sse("id: 1_a\nevent: activity\ndata: {\"id\":\"a\"}\n\n", false))
	s, err := f.client(t).StreamActivity(context.Background(), ActivityQuery{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("after the server closed: %v, want io.EOF", err)
	}
	if s.LastEventID() != "1_a" {
		t.Errorf("last id %q", s.LastEventID())
	}
	s.Close()
	s.Close()

	tooMany := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many open activity streams"})
	})
	if _, err := tooMany.client(t).StreamActivity(context.Background(), ActivityQuery{}, ""); StatusOf(err) != 429 || !strings.Contains(err.Error(), "too many open") {
		t.Errorf("429: %v", err)
	}
	notSSE := newFake(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{}) })
	if _, err := notSSE.client(t).StreamActivity(context.Background(), ActivityQuery{}, ""); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("a JSON answer: %v", err)
	}
	if _, err := notSSE.client(t).StreamActivity(context.Background(), ActivityQuery{}, "bad\r\nX-Injected: 1"); err == nil {
		t.Error("an event id with a line break was sent as a header")
	}
	if n := len(notSSE.requests()); n != 1 {
		t.Errorf("%d requests, want 1 (the bad id refused before I/O)", n)
	}
	huge := newFake(t, sse("event: activity\ndata: "+strings.Repeat("x", MaxResponseBytes+10)+"\n\n", false))
	s, err = huge.client(t).StreamActivity(context.Background(), ActivityQuery{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("an oversized line: %v", err)
	}
}

// The client's timeout bounds the wait for the answer but not the open
// stream; a silent stream ends after its idle bound; ending ctx ends
// Next with ctx's error.
func TestStreamActivityTimeouts(t *testing.T) {
	silent := newFake(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	if _, err := silent.client(t, WithTimeout(50*time.Millisecond)).StreamActivity(context.Background(), ActivityQuery{}, ""); err == nil ||
		!strings.Contains(err.Error(), "did not answer within 50ms") {
		t.Errorf("no answer: %v", err)
	}

	// An event after the client's timeout has passed still arrives.
	late := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		sse(": stream open\n\n", false)(w, r)
		<-late
		io.WriteString(w, "event: activity\ndata: {\"id\":\"late\"}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	s, err := f.client(t, WithTimeout(50*time.Millisecond)).StreamActivity(context.Background(), ActivityQuery{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-time.After(150 * time.Millisecond) // past the client's timeout: the property under test
	close(late)
	if e, err := s.Next(); err != nil || e.ID != "late" {
		t.Fatalf("an event after the client's timeout: %+v %v", e, err)
	}

	c := newFake(t, sse(": stream open\n\n", true)).client(t)
	c.streamIdle = 50 * time.Millisecond
	s, err = c.StreamActivity(context.Background(), ActivityQuery{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); !errors.Is(err, ErrStreamIdle) {
		t.Errorf("a silent stream: %v, want ErrStreamIdle", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	s, err = newFake(t, sse(": stream open\n\n", true)).client(t).StreamActivity(ctx, ActivityQuery{}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel()
	if _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v, want context.Canceled", err)
	}
}
