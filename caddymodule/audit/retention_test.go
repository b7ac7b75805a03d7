package audit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/periodic"
)

// retentionStore records the horizons it was asked to delete before.
type retentionStore struct {
	mu               sync.Mutex
	audit, requests  []time.Time
	failAudit, failR error
}

func (s *retentionStore) DeleteAuditBefore(_ context.Context, t time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audit = append(s.audit, t)
	return 3, s.failAudit
}

func (s *retentionStore) DeleteAccessRequestsBefore(_ context.Context, t time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, t)
	return 1, s.failR
}

func TestRetention(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	st := &retentionStore{}
	r := &Retention{Store: st, Every: 10 * time.Minute, Now: func() time.Time { return now }}
	keep := 90 * 24 * time.Hour
	if err := r.Purge(context.Background(), keep); err != nil {
		t.Fatal(err)
	}
	if len(st.audit) != 1 || !st.audit[0].Equal(now.Add(-keep)) || len(st.requests) != 1 || !st.requests[0].Equal(now.Add(-keep)) {
		t.Fatalf("first purge: %v %v, want both before %v", st.audit, st.requests, now.Add(-keep))
	}
	// Not again before Every, however often asked (the sweeper asks
	// every second).
	for range 5 {
		now = now.Add(time.Minute)
		if err := r.Purge(context.Background(), keep); err != nil {
			t.Fatal(err)
		}
	}
	if len(st.audit) != 1 {
		t.Fatalf("purged %d times within Every", len(st.audit))
	}
	now = now.Add(5 * time.Minute)
	// A failure is returned, and the purge is tried again after
	// periodic.RetryWait (not on the sweeper's next tick).
	st.failR = errors.New("database is locked")
	if err := r.Purge(context.Background(), keep); !errors.Is(err, st.failR) {
		t.Fatalf("a failing purge: %v", err)
	}
	st.failR = nil
	now = now.Add(time.Second)
	if err := r.Purge(context.Background(), time.Hour); err != nil || len(st.audit) != 2 {
		t.Fatalf("a second after a failure: %v, %d purges, want no try yet", err, len(st.audit))
	}
	now = now.Add(periodic.RetryWait)
	if err := r.Purge(context.Background(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if len(st.audit) != 3 || !st.audit[2].Equal(now.Add(-time.Hour)) {
		t.Fatalf("after a failure: %v, want a retry before %v", st.audit, now.Add(-time.Hour))
	}
	if err := r.Purge(context.Background(), 0); err == nil {
		t.Error("a retention of 0 purged")
	}
}

// TestRetentionDefaultEvery: without Every, an hour; concurrent calls
// purge once.
func TestRetentionDefaultEvery(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	st := &retentionStore{}
	r := &Retention{Store: st, Now: clock}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { r.Purge(context.Background(), time.Hour) })
	}
	wg.Wait()
	mu.Lock()
	now = now.Add(59 * time.Minute)
	mu.Unlock()
	r.Purge(context.Background(), time.Hour)
	if len(st.audit) != 1 {
		t.Fatalf("%d purges, want 1", len(st.audit))
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	r.Purge(context.Background(), time.Hour)
	if len(st.audit) != 2 {
		t.Fatalf("%d purges after an hour, want 2", len(st.audit))
	}
}
