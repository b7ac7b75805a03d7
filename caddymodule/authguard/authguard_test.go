package authguard

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestBudgetThenLimitedThenRefilled(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := &Guard{Rate: 2, Burst: 3, LogEvery: 10 * time.Second, Now: c.now}
	for i := 0; i < 3; i++ {
		if v := g.Fail("10.0.0.1"); v.Limited || !v.Log {
			t.Fatalf("failure %d within the burst: %+v", i, v)
		}
	}
	v := g.Fail("10.0.0.1")
	if !v.Limited || v.RetryAfter < time.Second || !v.Log || v.Suppressed != 1 {
		t.Fatalf("first failure past the burst: %+v, want limited and one summary line", v)
	}
	for i := 0; i < 5; i++ {
		if v := g.Fail("10.0.0.1"); !v.Limited || v.Log {
			t.Fatalf("limited failure %d was logged: %+v", i, v)
		}
	}
	if v := g.Fail("10.0.0.2"); v.Limited {
		t.Fatalf("another address is limited too: %+v", v)
	}
	c.advance(10 * time.Second) // refills fully, and the log interval passed
	if v := g.Fail("10.0.0.1"); v.Limited || !v.Log {
		t.Fatalf("after the refill: %+v", v)
	}
}

func TestSummaryCountsSuppressed(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := &Guard{Rate: 0.001, Burst: 1, LogEvery: time.Second, Now: c.now}
	g.Fail("a") // within budget
	g.Fail("a") // limited, summary of 1
	for i := 0; i < 7; i++ {
		g.Fail("a")
	}
	c.advance(time.Second)
	if v := g.Fail("a"); !v.Limited || !v.Log || v.Suppressed != 8 {
		t.Fatalf("summary = %+v, want 8 failures summarised", v)
	}
}

func TestAddressesStayBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := &Guard{Now: c.now}
	for i := 0; i < maxAddresses+100; i++ {
		g.Fail(string(rune(i)) + "x")
	}
	if len(g.m) > maxAddresses {
		t.Fatalf("%d addresses tracked, bound is %d", len(g.m), maxAddresses)
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":            "127.0.0.1",
		"::ffff:127.0.0.1":     "127.0.0.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
		"not-an-ip":            "not-an-ip",
	} {
		if got := Key(in); got != want {
			t.Errorf("Key(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeTimers stands in for time.AfterFunc: fire runs what is due.
type fakeTimers struct {
	c     *clock
	mu    sync.Mutex
	armed []*fakeTimer
}

type fakeTimer struct {
	at time.Time
	f  func()
}

func (ft *fakeTimers) afterFunc(d time.Duration, f func()) Timer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	tm := &fakeTimer{ft.c.t.Add(d), f}
	ft.armed = append(ft.armed, tm)
	return stopper{ft, tm}
}

// stopper is a fake timer's Stop.
type stopper struct {
	ft *fakeTimers
	tm *fakeTimer
}

func (s stopper) Stop() bool {
	s.ft.mu.Lock()
	defer s.ft.mu.Unlock()
	for i, tm := range s.ft.armed {
		if tm == s.tm {
			s.ft.armed = slices.Delete(s.ft.armed, i, i+1)
			return true
		}
	}
	return false
}

// fire runs the timers due by now, in order.
func (ft *fakeTimers) fire() {
	ft.mu.Lock()
	var due []func()
	kept := ft.armed[:0]
	for _, tm := range ft.armed {
		if !tm.at.After(ft.c.t) {
			due = append(due, tm.f)
		} else {
			kept = append(kept, tm)
		}
	}
	ft.armed = kept
	ft.mu.Unlock()
	for _, f := range due {
		f()
	}
}

func (ft *fakeTimers) pending() int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return len(ft.armed)
}

func newGlobalGuard(c *clock) (*Guard, *fakeTimers, *[]int) {
	ft := &fakeTimers{c: c}
	var summaries []int
	g := &Guard{Rate: 1, Burst: 2, LogEvery: 10 * time.Second, LogRate: 2, LogBurst: 5, Now: c.now, AfterFunc: ft.afterFunc}
	g.Summary = func(n int) { summaries = append(summaries, n) }
	return g, ft, &summaries
}

// Many addresses, each within its own budget: past the global burst,
// lines are dropped, and one summary line counts them.
func TestGlobalBoundManyAddresses(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g, ft, summaries := newGlobalGuard(c)
	logged, dropped := 0, 0
	for i := range 100 {
		v := g.Fail(Key(fmt.Sprintf("2001:db8:0:%x::1", i))) // 100 distinct /64s
		if v.Limited {
			t.Fatalf("address %d limited on its first failure: %+v", i, v)
		}
		switch {
		case v.Log && v.Dropped, !v.Log && !v.Dropped:
			t.Fatalf("failure %d: %+v, want exactly one of Log and Dropped", i, v)
		case v.Log:
			logged++
		default:
			dropped++
		}
	}
	if logged != 5 || dropped != 95 {
		t.Fatalf("logged %d, dropped %d; want the burst of 5 logged and 95 dropped", logged, dropped)
	}
	if ft.pending() != 1 {
		t.Fatalf("%d summary timers armed, want 1", ft.pending())
	}
	ft.fire() // not due yet
	if len(*summaries) != 0 {
		t.Fatalf("summary before LogEvery: %v", *summaries)
	}

	// The bucket refills at LogRate: 2 lines a second.
	c.advance(time.Second)
	logged = 0
	for i := range 10 {
		if v := g.Fail(Key(fmt.Sprintf("2001:db8:1:%x::1", i))); v.Log {
			logged++
		}
	}
	if logged != 2 {
		t.Errorf("%d lines one second later, want 2", logged)
	}
	c.advance(9 * time.Second)
	ft.fire()
	if want := []int{95 + 8}; !slices.Equal(*summaries, want) {
		t.Fatalf("summaries %v, want %v", *summaries, want)
	}

	// Quiet: no further summary; the next drop arms a new one.
	c.advance(time.Minute)
	ft.fire()
	if len(*summaries) != 1 || ft.pending() != 0 {
		t.Fatalf("summaries %v and %d timers after a quiet minute", *summaries, ft.pending())
	}
	for i := range 6 {
		g.Fail(Key(fmt.Sprintf("10.1.0.%d", i)))
	}
	c.advance(10 * time.Second)
	ft.fire()
	if want := []int{103, 1}; !slices.Equal(*summaries, want) {
		t.Fatalf("summaries %v, want %v", *summaries, want)
	}
}

// The global bound changes only logging: 407 and Retry-After stay per
// address, and a limited address's summary line that the global bound
// drops is folded, with the failures it stood for, into the count.
func TestGlobalBoundKeepsPerAddressAnswers(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g, ft, summaries := newGlobalGuard(c)
	// Other addresses spend the global burst first.
	for i := range 5 {
		if v := g.Fail(fmt.Sprintf("192.0.2.%d", i)); !v.Log {
			t.Fatalf("line %d of the global burst dropped: %+v", i, v)
		}
	}
	var verdicts []Verdict
	for range 6 {
		verdicts = append(verdicts, g.Fail("198.51.100.7"))
	}
	// Per address: two within budget, then limited.
	for i, v := range verdicts {
		if wantLimited := i >= 2; v.Limited != wantLimited {
			t.Errorf("failure %d: Limited = %v, want %v", i, v.Limited, wantLimited)
		}
		if v.Limited && v.RetryAfter < time.Second {
			t.Errorf("failure %d: RetryAfter %v", i, v.RetryAfter)
		}
		if v.Log {
			t.Errorf("failure %d logged over the global bound: %+v", i, v)
		}
	}
	// Same answers as a Guard without the global bound would give.
	ref := &Guard{Rate: 1, Burst: 2, LogEvery: 10 * time.Second, LogBurst: 1 << 30, Now: c.now}
	for i := range 6 {
		v := ref.Fail("198.51.100.7")
		if v.Limited != verdicts[i].Limited || v.RetryAfter != verdicts[i].RetryAfter {
			t.Errorf("failure %d: %+v, without the global bound %+v", i, verdicts[i], v)
		}
	}
	c.advance(10 * time.Second)
	ft.fire()
	// The address's lines dropped: 2 ordinary, 1 per-address summary of
	// 1 failure; its 3 later failures wait, per address, for its next
	// line.
	if want := []int{3}; !slices.Equal(*summaries, want) {
		t.Fatalf("summaries %v, want %v", *summaries, want)
	}
}

// Without Summary the count is kept but no timer is armed.
func TestGlobalBoundWithoutSummary(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	armed := 0
	g := &Guard{LogBurst: 1, LogRate: 1, Now: c.now, AfterFunc: func(time.Duration, func()) Timer { armed++; return nil }}
	g.Fail("10.0.0.1")
	if v := g.Fail("10.0.0.2"); v.Log || !v.Dropped {
		t.Fatalf("second line: %+v, want dropped", v)
	}
	if armed != 0 {
		t.Fatalf("%d timers armed without a Summary", armed)
	}
}

// Real timers, concurrent failures: run with -race.
func TestGlobalBoundConcurrent(t *testing.T) {
	got := make(chan int, 1)
	g := &Guard{LogBurst: 1, LogRate: 0.001, LogEvery: time.Millisecond}
	g.Summary = func(n int) { got <- n }
	var wg sync.WaitGroup
	var dropped atomic.Int64
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if g.Fail(fmt.Sprintf("10.%d.%d.1", i, j)).Dropped {
					dropped.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	const want = 8*50 - 1 // all but the burst's one line
	if n := dropped.Load(); n != want {
		t.Fatalf("%d lines dropped, want %d", n, want)
	}
	total := 0
	for total < want {
		total += <-got // the summary timer fires on its own; later drops re-arm it
	}
	if total != want {
		t.Fatalf("summaries counted %d failures, want %d", total, want)
	}
}

// Close reports the pending count at once and stops the timer: nothing
// reaches Summary later, whatever the clock does, and later drops arm
// no timer. (A config reload's old proxy must not log through its old
// logger 10 s after the new one took over.)
func TestCloseReportsPendingAndStopsTimer(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g, ft, summaries := newGlobalGuard(c)
	for i := range 12 { // the global burst is 5: 7 lines dropped
		g.Fail(fmt.Sprintf("10.2.0.%d", i))
	}
	if ft.pending() != 1 {
		t.Fatalf("%d summary timers armed, want 1", ft.pending())
	}
	c.advance(3 * time.Second)
	g.Close()
	if want := []int{7}; !slices.Equal(*summaries, want) {
		t.Fatalf("summaries after Close %v, want %v at once", *summaries, want)
	}
	if ft.pending() != 0 {
		t.Fatalf("%d timers still armed after Close", ft.pending())
	}
	dropped := 0
	for i := range 20 { // the bucket holds 5 again
		if g.Fail(fmt.Sprintf("10.3.0.%d", i)).Dropped {
			dropped++
		}
	}
	if dropped != 15 || ft.pending() != 0 {
		t.Fatalf("after Close: %d lines dropped, %d timers armed; want 15 and none", dropped, ft.pending())
	}
	c.advance(time.Minute)
	ft.fire()
	g.Close()
	if ft.pending() != 0 || len(*summaries) != 1 {
		t.Fatalf("after Close: %d timers, summaries %v", ft.pending(), *summaries)
	}
}

// A timer that fired while Close ran (Stop too late) reports nothing:
// Close has already handed the count over.
func TestCloseBeatsFiringTimer(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g, ft, summaries := newGlobalGuard(c)
	for i := range 6 {
		g.Fail(fmt.Sprintf("10.4.0.%d", i))
	}
	ft.mu.Lock()
	fired := ft.armed[0].f // as if it had fired and now waited for the lock
	ft.mu.Unlock()
	g.Close()
	fired()
	if want := []int{1}; !slices.Equal(*summaries, want) {
		t.Fatalf("summaries %v, want %v", *summaries, want)
	}
}

// With the real time.AfterFunc: Close reports before it returns, and
// lets go of the timer.
func TestCloseRealTimer(t *testing.T) {
	got := make(chan int, 1)
	g := &Guard{LogBurst: 1, LogRate: 0.001, LogEvery: time.Hour}
	g.Summary = func(n int) { got <- n }
	for i := range 4 {
		g.Fail(fmt.Sprintf("10.5.0.%d", i))
	}
	g.Close()
	close(got)
	if n := <-got; n != 3 {
		t.Fatalf("Close reported %d, want 3", n)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timer != nil {
		t.Error("timer kept after Close")
	}
}
