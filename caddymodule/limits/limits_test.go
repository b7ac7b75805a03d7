package limits

import (
	"sync"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBucketsBurstThenRate(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)}
	b := &Buckets{Now: c.now}
	for i := range 3 {
		if ok, _ := b.Take("s|svc", 3, time.Minute); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := b.Take("s|svc", 3, time.Minute)
	if ok || wait != 20*time.Second {
		t.Fatalf("4th: %v, wait %v; want refused, 20s (one token per 20s)", ok, wait)
	}
	if ok, _ := b.Take("other|svc", 3, time.Minute); !ok {
		t.Fatal("another session's bucket is shared")
	}
	c.t = c.t.Add(5 * time.Second)
	if ok, wait := b.Take("s|svc", 3, time.Minute); ok || wait != 15*time.Second {
		t.Fatalf("after 5s: %v %v, want refused, 15s", ok, wait)
	}
	c.t = c.t.Add(15 * time.Second)
	if ok, _ := b.Take("s|svc", 3, time.Minute); !ok {
		t.Fatal("refused after the token came back")
	}
	if ok, _ := b.Take("s|svc", 3, time.Minute); ok {
		t.Fatal("two tokens from 20s at 3/m")
	}
}

func TestBucketsForgetRefilled(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)}
	b := &Buckets{Now: c.now}
	b.Take("a", 10, time.Second)
	b.Take("b", 10, time.Hour)
	c.t = c.t.Add(2 * time.Minute)
	b.Take("c", 10, time.Second) // sweeps: a refilled, b did not
	if b.Len() != 2 {
		t.Fatalf("%d buckets kept, want 2 (b and c)", b.Len())
	}
}

func TestSlots(t *testing.T) {
	var s Slots
	var rel []func()
	for range 2 {
		r, ok := s.Acquire("s", 2)
		if !ok {
			t.Fatal("refused within the cap")
		}
		rel = append(rel, r)
	}
	if _, ok := s.Acquire("s", 2); ok {
		t.Fatal("a third slot past the cap of 2")
	}
	if _, ok := s.Acquire("t", 2); !ok {
		t.Fatal("another session is capped by this one")
	}
	rel[0]()
	rel[0]() // twice: one slot back, not two
	if s.InFlight("s") != 1 {
		t.Fatalf("in flight %d, want 1", s.InFlight("s"))
	}
	rel[1]()
	if s.InFlight("s") != 0 || len(s.m) != 1 {
		t.Fatalf("a session with nothing in flight is kept: %v", s.m)
	}
}

func TestSlotsConcurrent(t *testing.T) {
	var s Slots
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 100 {
		wg.Go(func() {
			if r, ok := s.Acquire("s", 10); ok {
				mu.Lock()
				got++
				mu.Unlock()
				defer r()
			}
		})
	}
	wg.Wait()
	if s.InFlight("s") != 0 || got == 0 {
		t.Fatalf("in flight %d after all released; %d acquired", s.InFlight("s"), got)
	}
}
