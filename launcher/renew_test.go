package launcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// scriptedRenewer answers renewals from a script and advances a fake
// clock: the renewal's schedule is checked without real waiting.
type scriptedRenewer struct {
	clock   time.Time
	answers []error // nil: success
	calls   []time.Time
	waits   []time.Duration
}

func (s *scriptedRenewer) RenewSession(_ context.Context, id string) (*apiwire.LeaseRenewal, error) {
	s.calls = append(s.calls, s.clock)
	if len(s.answers) == 0 {
		return nil, errors.New("script exhausted")
	}
	err := s.answers[0]
	s.answers = s.answers[1:]
	if err != nil {
		return nil, err
	}
	return &apiwire.LeaseRenewal{ID: id, LeaseExpiresAt: s.clock.Add(30 * time.Second)}, nil
}

func (s *scriptedRenewer) now() time.Time { return s.clock }

// maxScriptedWaits ends a renewal that would never stop by itself.
const maxScriptedWaits = 1000

func (s *scriptedRenewer) wait(ctx context.Context, d time.Duration) bool {
	s.waits = append(s.waits, d)
	s.clock = s.clock.Add(d)
	return ctx.Err() == nil && len(s.waits) < maxScriptedWaits
}

func newScripted(t *testing.T, answers ...error) (*scriptedRenewer, *renewal, *[]string) {
	t.Helper()
	s := &scriptedRenewer{clock: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), answers: answers}
	var warnings []string
	until := s.clock.Add(30 * time.Second)
	r, err := newRenewal(s, &apiwire.Session{ID: "sess_1", LeaseTimeout: "30s", LeaseExpiresAt: &until}, s.now,
		func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) })
	if err != nil || r == nil {
		t.Fatalf("newRenewal = %v, %v", r, err)
	}
	r.wait = s.wait
	return s, r, &warnings
}

var errUnavailable = &apiclient.Error{Status: http.StatusServiceUnavailable, Message: "state database unreachable"}

// Every third of the lease; failures retried at half that, quietly
// until a third of the lease is left; a success resets; 410 ends it all.
func TestRenewalSchedule(t *testing.T) {
	gone := &apiclient.Error{Status: http.StatusGone, Message: "session sess_1 has ended"}
	s, r, warnings := newScripted(t, nil, errUnavailable, errUnavailable, errUnavailable, errUnavailable, nil, errUnavailable, gone)
	r.run(context.Background()) // returns by itself on 410
	sec := time.Second
	if want := []time.Duration{10 * sec, 10 * sec, 5 * sec, 5 * sec, 5 * sec, 5 * sec, 10 * sec, 5 * sec}; !slices.Equal(s.waits, want) {
		t.Errorf("waits = %v, want %v", s.waits, want)
	}
	if len(s.calls) != 8 {
		t.Errorf("calls = %d, want 8", len(s.calls))
	}
	// One lapse warning, at the third failure in a row (t=30s, the lease
	// lapsing at 40s: a third left), none for the fourth, none after the
	// success (one failure only), and one for the end.
	if len(*warnings) != 2 {
		t.Fatalf("warnings = %q, want 2", *warnings)
	}
	if w := (*warnings)[0]; !strings.HasPrefix(w, "renewing the session lease failed (503 state database unreachable); the broker ends the session at 2030-01-01T00:00:40Z") {
		t.Errorf("lapse warning = %q", w)
	}
	if w := (*warnings)[1]; w != "the broker ended the session: session sess_1 has ended; the command keeps running, but the proxy refuses its requests now" {
		t.Errorf("end warning = %q", w)
	}
}

func TestRenewalStopsWhenSessionEnds(t *testing.T) {
	for status, want := range map[int]string{
		http.StatusGone:     "the broker ended the session: x",
		http.StatusNotFound: "the broker ended the session: x",
		http.StatusConflict: "the server keeps no lease on the session (x): not renewing it",
	} {
		s, r, warnings := newScripted(t, &apiclient.Error{Status: status, Message: "x"}, nil, nil)
		r.run(context.Background())
		if len(s.calls) != 1 || len(*warnings) != 1 || !strings.HasPrefix((*warnings)[0], want) {
			t.Errorf("%d: calls %d, warnings %q", status, len(s.calls), *warnings)
		}
	}
}

func TestRenewalStopsWithContext(t *testing.T) {
	s, r, warnings := newScripted(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.run(ctx)
	if len(s.calls) != 0 || len(*warnings) != 0 {
		t.Errorf("calls %d, warnings %q after cancel", len(s.calls), *warnings)
	}
}

// A dead token (the agent deleted or rotated: 401, 403) never renews
// again: the renewals stop once the lease has certainly lapsed (a whole
// lease timeout past its end), saying the session ended.
func TestRenewalStopsOnRefusedTokenAfterLapse(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		refused := &apiclient.Error{Status: status, Message: "unknown or expired token"}
		answers := make([]error, maxScriptedWaits)
		for i := range answers {
			answers[i] = refused
		}
		s, r, warnings := newScripted(t, answers...)
		start := s.clock
		r.run(context.Background())
		// Lease 30s from start: renewals at 10s, then every 5s, the last
		// at 60s (30s past the lease's end).
		if len(s.calls) != 11 || !s.calls[len(s.calls)-1].Equal(start.Add(60*time.Second)) {
			t.Fatalf("%d: %d renewals, the last at %v; want 11, the last 60s in", status, len(s.calls), s.calls[len(s.calls)-1].Sub(start))
		}
		if len(*warnings) != 2 || !strings.HasPrefix((*warnings)[1], "the session ended: its lease lapsed at 2030-01-01T00:00:30Z while the server refused the renewals") {
			t.Errorf("%d: warnings %q", status, *warnings)
		}
	}
	// Other failures (the server unreachable, 503) go on: a renewal that
	// gets through learns the session's fate (410) from the server.
	answers := make([]error, maxScriptedWaits)
	for i := range answers {
		answers[i] = errUnavailable
	}
	s, r, _ := newScripted(t, answers...)
	r.run(context.Background())
	if len(s.calls) < 100 {
		t.Errorf("503s stopped the renewals after %d", len(s.calls))
	}
}

// av-launch asked for a lease: an answer without a usable one is refused
// (fail closed), no opt-out.
func TestNewRenewal(t *testing.T) {
	var warned []string
	warn := func(format string, args ...any) { warned = append(warned, fmt.Sprintf(format, args...)) }
	for _, bad := range []string{"", "soon", "0s", "-5s"} {
		if r, err := newRenewal(nil, &apiwire.Session{ID: "s", LeaseTimeout: bad}, time.Now, warn); r != nil || !errors.Is(err, errNotLeased) {
			t.Errorf("lease_timeout %q: %v, %v; want errNotLeased", bad, r, err)
		}
	}
	r, err := newRenewal(nil, &apiwire.Session{ID: "s", LeaseTimeout: "1ns"}, time.Now, warn)
	if err != nil || r.every != minRenewInterval {
		t.Errorf("tiny lease: every = %v, %v", r.every, err)
	}
	r, err = newRenewal(nil, &apiwire.Session{ID: "s", LeaseTimeout: "30s"}, time.Now, warn)
	if err != nil || r.every != 10*time.Second {
		t.Errorf("30s lease: every = %v, %v", r.every, err)
	}
}
