package discovered

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
)

type fakeStore struct {
	mu      sync.Mutex
	fail    bool
	batches [][]Host
}

func (s *fakeStore) MergeDiscovered(_ context.Context, hs []Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("down")
	}
	s.batches = append(s.batches, hs)
	return nil
}

func refusal(host string, port int, at time.Time, agent, session, scheme string) *activity.Entry {
	return &activity.Entry{At: at, Host: host, Port: port, Agent: agent, Session: session, AuthScheme: scheme,
		Code: activity.CodeUncoveredHost, Status: 403, Decision: activity.Refused}
}

func TestTrackerAggregates(t *testing.T) {
	st := &fakeStore{}
	tr := NewTracker(st, 2)
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	tr.Observe(refusal("api.stripe.com", 443, t0, "ci-bot", "s1", "Bearer"))
	tr.Observe(refusal("api.stripe.com", 443, t0.Add(-time.Second), "ci-bot", "s2", ""))
	tr.Observe(&activity.Entry{At: t0, Host: "api.github.com", Port: 443, Code: activity.CodePlaceholder}) // not an uncovered host
	tr.Observe(refusal("b.example", 443, t0, "", "s1", ""))
	tr.Observe(refusal("c.example", 443, t0, "", "s1", "")) // past the bound
	if tr.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", tr.Dropped())
	}
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(st.batches) != 1 || len(st.batches[0]) != 2 {
		t.Fatalf("batches %+v", st.batches)
	}
	for _, h := range st.batches[0] {
		if h.Host == "api.stripe.com" && (h.Count != 2 || !h.FirstSeen.Equal(t0.Add(-time.Second)) || !h.LastSeen.Equal(t0) ||
			!slices.Equal(h.Schemes, []string{"Bearer"}) || !slices.Equal(h.Agents, []string{"ci-bot"}) || !slices.Equal(h.Sessions, []string{"s1", "s2"})) {
			t.Errorf("aggregate %+v", h)
		}
	}
	if err := tr.Flush(context.Background()); err != nil || len(st.batches) != 1 {
		t.Errorf("an empty flush wrote: %v %d", err, len(st.batches))
	}
}

func TestTrackerKeepsWhatFailed(t *testing.T) {
	st := &fakeStore{fail: true}
	tr := NewTracker(st, 0)
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	tr.Observe(refusal("a.example", 443, t0, "x", "s1", "Basic"))
	if err := tr.Flush(context.Background()); err == nil {
		t.Fatal("Flush hid the store's error")
	}
	tr.Observe(refusal("a.example", 443, t0.Add(time.Minute), "y", "s2", "Bearer"))
	st.fail = false
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := st.batches[0][0]
	if h.Count != 2 || !h.FirstSeen.Equal(t0) || !h.LastSeen.Equal(t0.Add(time.Minute)) ||
		!slices.Equal(h.Schemes, []string{"Basic", "Bearer"}) || !slices.Equal(h.Agents, []string{"x", "y"}) {
		t.Errorf("after a failed flush: %+v", h)
	}
}
