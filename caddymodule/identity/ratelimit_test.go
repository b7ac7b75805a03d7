package identity

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimiter() (*LoginLimiter, *fakeClock) {
	c := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return &LoginLimiter{Now: c.Now}, c
}

// fail makes n failed logins, failing the test if one is refused.
func fail(t *testing.T, l *LoginLimiter, client, name string, n int) {
	t.Helper()
	for i := range n {
		a, err := l.Begin(client, name)
		if err != nil {
			t.Fatalf("attempt %d from %s for %s refused: %v", i+1, client, name, err)
		}
		a.Fail()
	}
}

// failNames makes n failed logins from client, each for another name.
func failNames(t *testing.T, l *LoginLimiter, client string, n int) {
	t.Helper()
	for i := range n {
		fail(t, l, client, fmt.Sprintf("%s-user%d", client, i), 1)
	}
}

// refused checks that a login is refused, naming subject, for retry.
func refused(t *testing.T, l *LoginLimiter, client, name, subject string, retry time.Duration) {
	t.Helper()
	a, err := l.Begin(client, name)
	var re *RateLimitError
	if !errors.As(err, &re) || a != nil {
		t.Fatalf("login from %s for %s: %v, want a refusal", client, name, err)
	}
	if re.Subject != subject || re.RetryAfter != retry {
		t.Fatalf("refusal %q (retry %v), want subject %q retry %v", re, re.RetryAfter, subject, retry)
	}
	want := fmt.Sprintf("too many failed logins for %s; retry in %ds", subject, int(retry/time.Second))
	if re.Error() != want || re.HTTPStatus() != 429 || re.RetryAfterSeconds() != fmt.Sprint(int(retry/time.Second)) {
		t.Fatalf("refusal text %q status %d, want %q", re, re.HTTPStatus(), want)
	}
}

func TestLoginLimiterPerName(t *testing.T) {
	l, clock := newLimiter()
	for i := range LoginNameFailures {
		fail(t, l, fmt.Sprintf("192.0.2.%d", i), "alice", 1)
	}
	// 5 per 5 minutes: one failure back every minute.
	refused(t, l, "198.51.100.1", "alice", "operator alice", time.Minute)
	fail(t, l, "198.51.100.1", "bob", 1)
	clock.Advance(59*time.Second + 500*time.Millisecond)
	refused(t, l, "198.51.100.1", "alice", "operator alice", time.Second)
	clock.Advance(500 * time.Millisecond)
	fail(t, l, "198.51.100.1", "alice", 1)
	refused(t, l, "198.51.100.1", "alice", "operator alice", time.Minute)
	// The budget refills continuously, up to its burst only.
	clock.Advance(time.Hour)
	fail(t, l, "203.0.113.1", "alice", LoginNameFailures)
	refused(t, l, "203.0.113.2", "alice", "operator alice", time.Minute)
}

func TestLoginLimiterPerAddress(t *testing.T) {
	l, clock := newLimiter()
	failNames(t, l, "192.0.2.1", LoginAddressFailures)
	// 10 per 5 minutes: one back every 30 s.
	refused(t, l, "192.0.2.1", "someone", "address 192.0.2.1", 30*time.Second)
	refused(t, l, "::ffff:192.0.2.1", "someone", "address 192.0.2.1", 30*time.Second)
	fail(t, l, "192.0.2.2", "someone", 1)
	clock.Advance(30 * time.Second)
	fail(t, l, "192.0.2.1", "someone", 1)
	refused(t, l, "192.0.2.1", "someone", "address 192.0.2.1", 30*time.Second)

	// An IPv6 address counts as its /64.
	failNames(t, l, "2001:db8::1", 5)
	failNames(t, l, "2001:db8::ffff:2", 5)
	refused(t, l, "2001:db8::3", "z", "address 2001:db8::/64", 30*time.Second)
	fail(t, l, "2001:db8:0:1::1", "z", 1)
}

func TestLoginLimiterBothSpent(t *testing.T) {
	l, clock := newLimiter()
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures)
	failNames(t, l, "192.0.2.1", LoginAddressFailures-LoginNameFailures)
	// Both spent: the later retry is reported.
	refused(t, l, "192.0.2.1", "alice", "operator alice", time.Minute)
	refused(t, l, "192.0.2.1", "carol", "address 192.0.2.1", 30*time.Second)
	clock.Advance(30 * time.Second)
	refused(t, l, "192.0.2.1", "alice", "operator alice", 30*time.Second)
	fail(t, l, "192.0.2.1", "carol", 1)
}

func TestLoginLimiterSucceed(t *testing.T) {
	l, _ := newLimiter()
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures-1)
	a, err := l.Begin("192.0.2.1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	a.Succeed()
	a.Fail() // ends nothing more
	// The name's budget is full again...
	for i := range LoginNameFailures {
		fail(t, l, fmt.Sprintf("198.51.100.%d", i), "alice", 1)
	}
	refused(t, l, "198.51.100.9", "alice", "operator alice", time.Minute)
	// ...but the address keeps its earlier failures: 4 spent.
	failNames(t, l, "192.0.2.1", LoginAddressFailures-(LoginNameFailures-1))
	refused(t, l, "192.0.2.1", "carol", "address 192.0.2.1", 30*time.Second)
}

func TestLoginLimiterAbort(t *testing.T) {
	l, _ := newLimiter()
	for range 3 * LoginAddressFailures {
		a, err := l.Begin("192.0.2.1", "alice")
		if err != nil {
			t.Fatalf("an aborted attempt counted: %v", err)
		}
		a.Abort()
		a.Abort()
	}
	// An attempt never ended counts as failed; a second ending does
	// not undo the first.
	for range LoginNameFailures {
		a, err := l.Begin("192.0.2.1", "alice")
		if err != nil || a == nil {
			t.Fatal(err)
		}
	}
	refused(t, l, "192.0.2.1", "alice", "operator alice", time.Minute)
	l2, _ := newLimiter()
	for range LoginNameFailures {
		a, err := l2.Begin("192.0.2.1", "alice")
		if err != nil {
			t.Fatal(err)
		}
		a.Fail()
		a.Succeed()
		a.Abort()
	}
	refused(t, l2, "192.0.2.1", "alice", "operator alice", time.Minute)
}

// TestLoginLimiterParallel: attempts racing each other cannot overshoot
// the budget, since each reserves its failure before the password is
// checked.
func TestLoginLimiterParallel(t *testing.T) {
	l, _ := newLimiter()
	var let atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 100 {
		wg.Go(func() {
			<-start
			if a, err := l.Begin(fmt.Sprintf("192.0.2.%d", i), "alice"); err == nil {
				let.Add(1)
				a.Fail()
			}
		})
	}
	close(start)
	wg.Wait()
	if let.Load() != LoginNameFailures {
		t.Fatalf("%d parallel attempts let through, want %d", let.Load(), LoginNameFailures)
	}
}

func TestLoginLimiterSubjects(t *testing.T) {
	l, _ := newLimiter()
	bad := "Not A Name\n" + string(make([]byte, 1000))
	fail(t, l, "192.0.2.1", bad, LoginNameFailures)
	refused(t, l, "192.0.2.2", bad, "this name", time.Minute)
	long := string(make([]byte, 100))
	failNames(t, l, long, LoginAddressFailures)
	refused(t, l, long, "y", "this address", 30*time.Second)
}

func TestLoginLimiterClockBack(t *testing.T) {
	l, clock := newLimiter()
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures)
	clock.Advance(-time.Hour)
	refused(t, l, "192.0.2.1", "alice", "operator alice", time.Minute)
	clock.Advance(time.Hour + time.Minute)
	fail(t, l, "192.0.2.1", "alice", 1)
}

// TestLoginLimiterBounded: past loginMaxKeys addresses (or names) the
// least recently used is forgotten.
func TestLoginLimiterBounded(t *testing.T) {
	l, _ := newLimiter()
	addr := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
	for i := range loginMaxKeys + 100 {
		fail(t, l, addr(i), fmt.Sprintf("n%d", i), 1)
	}
	if l.addrs.len() != loginMaxKeys || l.names.len() != loginMaxKeys {
		t.Fatalf("%d addresses, %d names tracked; want %d", l.addrs.len(), l.names.len(), loginMaxKeys)
	}
	if l.addrs.m[sha256.Sum256([]byte(addr(0)))] != nil || l.names.m[sha256.Sum256([]byte("n99"))] != nil {
		t.Error("the oldest were kept")
	}
	if l.addrs.m[sha256.Sum256([]byte(addr(loginMaxKeys+99)))] == nil || l.names.m[sha256.Sum256([]byte("n100"))] == nil {
		t.Error("the newest were dropped")
	}
}
