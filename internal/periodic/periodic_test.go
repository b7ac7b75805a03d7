package periodic

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := &Gate{Every: time.Hour, Now: func() time.Time { return now }}
	runs := 0
	var fail error
	job := func(_ context.Context, at time.Time) error {
		if !at.Equal(now) {
			t.Errorf("job ran at %v, want %v", at, now)
		}
		runs++
		return fail
	}
	run := func(want int) {
		t.Helper()
		if err := g.Run(context.Background(), job); !errors.Is(err, fail) {
			t.Fatalf("Run: %v, want %v", err, fail)
		}
		if runs != want {
			t.Fatalf("%d runs, want %d", runs, want)
		}
	}
	run(1) // never ran: due
	run(1) // not an hour later
	now = now.Add(59 * time.Minute)
	run(1)
	now = now.Add(time.Minute)
	// A failure is not counted: it is tried again, but only after
	// RetryWait (the sweeper asks every second).
	fail = errors.New("store down")
	run(2)
	down := fail
	fail = nil
	run(2) // a second later: waited out, nil
	now = now.Add(RetryWait - time.Second)
	run(2)
	now = now.Add(time.Second)
	fail = down
	run(3) // tried again, fails again
	now = now.Add(RetryWait)
	fail = nil
	run(4) // recovers: an hour from now on
	run(4)
	now = now.Add(59 * time.Minute)
	run(4)
	now = now.Add(time.Minute)
	run(5)
	// A short Every retries after Every, not RetryWait.
	s := &Gate{Every: time.Second, Now: func() time.Time { return now }}
	tries := 0
	for range 3 {
		_ = s.Run(context.Background(), func(context.Context, time.Time) error { tries++; return down })
		now = now.Add(time.Second)
	}
	if tries != 3 {
		t.Errorf("a 1s gate failing every time ran %d times in 3s, want 3", tries)
	}
	// The zero Gate runs every time.
	var z Gate
	n := 0
	for range 3 {
		z.Run(context.Background(), func(context.Context, time.Time) error { n++; return nil })
	}
	if n != 3 {
		t.Errorf("the zero Gate ran %d times of 3", n)
	}
}

// Lazy takes its interval (or the default for 0) and clock on the
// first Run, and keeps them.
func TestLazy(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	var l Lazy
	runs := 0
	job := func(context.Context, time.Time) error { runs++; return nil }
	for _, step := range []time.Duration{0, time.Minute, 59 * time.Minute, time.Minute} {
		now = now.Add(step)
		// A later Run's settings (every 1ns) are not taken.
		every := time.Duration(0)
		if runs > 0 {
			every = time.Nanosecond
		}
		if err := l.Run(context.Background(), every, time.Hour, clock, job); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 2 {
		t.Fatalf("%d runs in 61 minutes with the 1h default, want 2", runs)
	}
}
