package activity

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is an in-memory Lister and Purger.
type memStore struct {
	mu sync.Mutex
	es []Entry
}

func (m *memStore) add(es ...Entry) {
	m.mu.Lock()
	m.es = append(m.es, es...)
	m.mu.Unlock()
}

func (m *memStore) ListActivity(_ context.Context, f Filter) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Entry
	for _, e := range m.es {
		if f.Agent != "" && e.Agent != f.Agent || !f.Since.IsZero() && e.At.Before(f.Since) ||
			f.After != nil && !after(e, *f.After) {
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	if f.After != nil {
		slices.Reverse(out) // oldest first
	}
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func (m *memStore) DeleteActivityBefore(_ context.Context, t time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.es)
	m.es = slices.DeleteFunc(m.es, func(e Entry) bool { return e.At.Before(t) })
	return n - len(m.es), nil
}

func (m *memStore) TrimActivity(_ context.Context, keep int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.es) <= keep {
		return 0, nil
	}
	slices.SortFunc(m.es, func(a, b Entry) int { return b.At.Compare(a.At) })
	n := len(m.es) - keep
	m.es = m.es[:keep]
	return n, nil
}

func ids(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func poll(t *testing.T, fl *Follower, want ...string) {
	t.Helper()
	got, err := fl.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), want) {
		t.Fatalf("poll = %v, want %v", ids(got), want)
	}
}

func TestFollower(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	m := &memStore{}
	m.add(Entry{ID: "old", At: t0.Add(-time.Second), Agent: "a"})
	fl := NewFollower(m, Filter{Agent: "a"}, nil, t0, 5*time.Second)
	poll(t, fl) // what was there before the stream is not news
	m.add(Entry{ID: "b", At: t0.Add(2 * time.Second), Agent: "a"}, Entry{ID: "a", At: t0.Add(time.Second), Agent: "a"},
		Entry{ID: "other", At: t0.Add(time.Second), Agent: "x"})
	poll(t, fl, "a", "b") // oldest first, filtered
	poll(t, fl)           // each once
	// Another broker's batch lands late, with an earlier time: within
	// the lookback it still appears.
	m.add(Entry{ID: "late", At: t0.Add(1500 * time.Millisecond), Agent: "a"})
	poll(t, fl, "late")

	// Resuming after a cursor (Last-Event-ID): only what follows it.
	fl = NewFollower(m, Filter{Agent: "a"}, &Cursor{At: t0.Add(time.Second), ID: "a"}, t0.Add(time.Hour), 5*time.Second)
	poll(t, fl, "late", "b")
	poll(t, fl)
}

// More entries than one read holds, between two polls (a flood): every
// one is sent, oldest first, none twice.
func TestFollowerFlood(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	m := &memStore{}
	fl := NewFollower(m, Filter{}, nil, t0, 5*time.Second)
	poll(t, fl)
	var want []string
	for i := range 2*followPage + 7 {
		e := Entry{ID: fmt.Sprintf("e%05d", i), At: t0.Add(time.Duration(i) * time.Microsecond)}
		m.add(e)
		want = append(want, e.ID)
	}
	poll(t, fl, want...)
	poll(t, fl)

	// A backlog beyond followPages pages (a resume from an old cursor)
	// goes over several polls, each entry once.
	m = &memStore{}
	want = want[:0]
	for i := range followPages*followPage + 5 {
		e := Entry{ID: fmt.Sprintf("e%05d", i), At: t0.Add(time.Duration(i) * time.Microsecond)}
		m.add(e)
		want = append(want, e.ID)
	}
	fl = NewFollower(m, Filter{}, &Cursor{At: t0}, t0, 5*time.Second)
	poll(t, fl, want[:followPages*followPage]...)
	poll(t, fl, want[followPages*followPage:]...)
	poll(t, fl)
}

func TestRetentionPurgesByAgeAndCount(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	m := &memStore{}
	for i := range 10 {
		m.add(Entry{ID: string(rune('a' + i)), At: now.Add(-time.Duration(i) * time.Hour)})
	}
	r := &Retention{Store: m, Every: time.Hour, Now: func() time.Time { return now }}
	if err := r.Purge(context.Background(), 5*time.Hour+time.Minute, 4); err != nil {
		t.Fatal(err)
	}
	got, _ := m.ListActivity(context.Background(), Filter{Limit: 100})
	if !slices.Equal(ids(got), []string{"a", "b", "c", "d"}) {
		t.Fatalf("kept %v", ids(got))
	}
	m.add(Entry{ID: "z", At: now.Add(-100 * time.Hour)})
	if err := r.Purge(context.Background(), time.Hour, 4); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.ListActivity(context.Background(), Filter{Limit: 100}); len(got) != 5 {
		t.Fatalf("purged again within Every: %v", ids(got))
	}
	if err := r.Purge(context.Background(), 0, 4); err == nil {
		t.Fatal("a retention of 0 accepted")
	}
}
