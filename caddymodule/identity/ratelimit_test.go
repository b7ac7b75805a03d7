package identity

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"strings"
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
		fail(t, l, client, fmt.Sprintf("user%d-%x", i, sha256.Sum256([]byte(client)))[:20], 1)
	}
}

// ipv4 is the i-th address of 10.0.0.0/8.
func ipv4(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

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
	want := fmt.Sprintf("too many failed logins %s; retry in %ds", subject, int(retry/time.Second))
	if re.Error() != want || re.HTTPStatus() != 429 || re.RetryAfterSeconds() != fmt.Sprint(int(retry/time.Second)) {
		t.Fatalf("refusal text %q status %d, want %q", re, re.HTTPStatus(), want)
	}
	if strings.Contains(re.Error(), name) || strings.Contains(re.Error(), client) {
		t.Fatalf("refusal %q repeats the name or the address", re)
	}
}

// isRefused reports whether a login is refused for its rate; a let
// through one fails.
func isRefused(t *testing.T, l *LoginLimiter, client, name string) bool {
	t.Helper()
	a, err := l.Begin(client, name)
	var re *RateLimitError
	switch {
	case errors.As(err, &re):
		return true
	case err != nil:
		t.Fatalf("login from %s for %s: %v", client, name, err)
	}
	a.Fail()
	return false
}

// TestLoginLimiterPerNameAndAddress: one address may fail a name 5
// times per 5 minutes; that does not lock the name out from elsewhere.
func TestLoginLimiterPerNameAndAddress(t *testing.T) {
	l, clock := newLimiter()
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures)
	// 5 per 5 minutes: one failure back every minute.
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
	fail(t, l, "198.51.100.1", "alice", 1) // alice is not locked out
	fail(t, l, "192.0.2.1", "bob", 1)
	clock.Advance(59*time.Second + 500*time.Millisecond)
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Second)
	clock.Advance(500 * time.Millisecond)
	fail(t, l, "192.0.2.1", "alice", 1)
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
	// The budget refills continuously, up to its burst only.
	clock.Advance(time.Hour)
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures)
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
	// An IPv6 /64 is one address for this budget too.
	fail(t, l, "[2001:db8::1]:1000", "carol", 3)
	fail(t, l, "2001:db8::2", "carol", 2)
	refused(t, l, "[2001:db8::3]:2000", "carol", LimitName, time.Minute)
	fail(t, l, "2001:db8:0:1::1", "carol", 1)
}

// TestLoginLimiterPerNameTotal: failures for one name from many
// addresses together are bounded too.
func TestLoginLimiterPerNameTotal(t *testing.T) {
	l, clock := newLimiter()
	for i := range LoginNameTotalFailures {
		fail(t, l, ipv4(i), "alice", 1)
	}
	// 50 per 5 minutes: one back every 6 s.
	refused(t, l, "198.51.100.1", "alice", LimitName, 6*time.Second)
	fail(t, l, "198.51.100.1", "bob", 1)
	clock.Advance(6 * time.Second)
	fail(t, l, "198.51.100.1", "alice", 1)
	refused(t, l, "198.51.100.2", "alice", LimitName, 6*time.Second)
}

func TestLoginLimiterPerAddress(t *testing.T) {
	l, clock := newLimiter()
	failNames(t, l, "192.0.2.1", LoginAddressFailures)
	// 10 per 5 minutes: one back every 30 s.
	refused(t, l, "192.0.2.1", "someone", LimitAddress, 30*time.Second)
	refused(t, l, "::ffff:192.0.2.1", "someone", LimitAddress, 30*time.Second)
	fail(t, l, "192.0.2.2", "someone", 1)
	clock.Advance(30 * time.Second)
	fail(t, l, "192.0.2.1", "someone", 1)
	refused(t, l, "192.0.2.1", "someone", LimitAddress, 30*time.Second)

	// An IPv6 address counts as its /64.
	failNames(t, l, "2001:db8::1", 5)
	failNames(t, l, "2001:db8::ffff:2", 5)
	refused(t, l, "2001:db8::3", "z", LimitAddress, 30*time.Second)
	fail(t, l, "2001:db8:0:1::1", "z", 1)
}

// TestLoginLimiterClientForms: the client is r.RemoteAddr or a bare IP,
// reduced to the IP; anything else is refused, never a key of its own.
func TestLoginLimiterClientForms(t *testing.T) {
	l, _ := newLimiter()
	forms := []string{"192.0.2.1", "192.0.2.1:1234", "[::ffff:192.0.2.1]:80", "::ffff:192.0.2.1", "192.0.2.1:65535"}
	for i := range LoginAddressFailures {
		fail(t, l, forms[i%len(forms)], fmt.Sprintf("user%d", i), 1)
	}
	for _, f := range forms {
		refused(t, l, f, "someone", LimitAddress, 30*time.Second)
	}
	failNames(t, l, "[2001:db8::1]:443", 4)
	failNames(t, l, "[fe80::1%eth0]:443", 1)
	failNames(t, l, "fe80::2%eth1", 1)
	failNames(t, l, "2001:db8::2", 6)
	refused(t, l, "2001:db8::99", "someone", LimitAddress, 30*time.Second)
	for _, bad := range []string{"", "not an ip", "example.com:80", "192.0.2.1:", "192.0.2.1:99999", "[192.0.2.1]", "[::1]", "@", "/run/caddy.sock", "192.0.2.1:80:80", "192.0.2.256"} {
		a, err := l.Begin(bad, "alice")
		var coded interface{ HTTPStatus() int }
		if a != nil || !errors.Is(err, ErrNotIP) || !errors.As(err, &coded) || coded.HTTPStatus() != 500 {
			t.Errorf("client %q: %v, want ErrNotIP (500)", bad, err)
		}
	}
	if l.addrs.len() != 3 { // 192.0.2.1, 2001:db8::/64, fe80::/64
		t.Errorf("%d address buckets", l.addrs.len())
	}
}

// TestLoginLimiterInvalidName: a name no operator can have is a failed
// login at once, that costs its address one failure and no other
// bucket; once the address's budget is spent it is refused like any
// other attempt (an unauthenticated flood of them is limited too).
func TestLoginLimiterInvalidName(t *testing.T) {
	l, clock := newLimiter()
	names := []string{"", "Alice", "correct horse battery staple", "admin-token", strings.Repeat("a", 65), "Not A Name\n" + string(make([]byte, 1000))}
	for i := range LoginAddressFailures {
		name := names[i%len(names)]
		a, err := l.Begin("192.0.2.1", name)
		var ue *UnauthenticatedError
		if a != nil || err != ErrWrongLogin || !errors.As(err, &ue) || ue.HTTPStatus() != 401 {
			t.Errorf("name %.20q: %v, want ErrWrongLogin", name, err)
		}
		if err != nil && (strings.Contains(err.Error(), "horse") || strings.Contains(err.Error(), "192.0.2")) {
			t.Errorf("error %q repeats the name or the address", err)
		}
	}
	if l.addrs.len() != 1 || l.pairs.len()+l.names.len() != 0 {
		t.Errorf("invalid names made buckets: %d %d %d, want the address's only", l.addrs.len(), l.pairs.len(), l.names.len())
	}
	// The address's budget is spent: invalid and valid names alike.
	refused(t, l, "192.0.2.1", "Not A Name", LimitAddress, 30*time.Second)
	refused(t, l, "192.0.2.1", "alice", LimitAddress, 30*time.Second)
	// Another address is not charged.
	if a, err := l.Begin("192.0.2.2", "alice"); err != nil {
		t.Errorf("another address: %v", err)
	} else {
		a.Fail()
	}
	// The budget refills as any other.
	clock.Advance(30 * time.Second)
	if _, err := l.Begin("192.0.2.1", "Not A Name"); err != ErrWrongLogin {
		t.Errorf("after a refill: %v, want ErrWrongLogin", err)
	}
	if err := ErrWrongLogin.Error(); err != "wrong operator name or password" {
		t.Errorf("ErrWrongLogin %q", err)
	}
}

func TestLoginLimiterBothSpent(t *testing.T) {
	l, clock := newLimiter()
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures)
	failNames(t, l, "192.0.2.1", LoginAddressFailures-LoginNameFailures)
	// Both spent: the later retry is reported.
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
	refused(t, l, "192.0.2.1", "carol", LimitAddress, 30*time.Second)
	clock.Advance(30 * time.Second)
	refused(t, l, "192.0.2.1", "alice", LimitName, 30*time.Second)
	fail(t, l, "192.0.2.1", "carol", 1)
}

func TestLoginLimiterSucceed(t *testing.T) {
	l, _ := newLimiter()
	// 40 failures for alice from elsewhere, 4 from 192.0.2.1.
	for i := range 40 {
		fail(t, l, ipv4(i), "alice", 1)
	}
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures-1)
	a, err := l.Begin("192.0.2.1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	a.Succeed()
	a.Fail() // ends nothing more
	// The budget of alice from 192.0.2.1 is full again...
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures)
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
	// ...the total keeps the earlier failures: 49 spent, one left...
	fail(t, l, "198.51.100.1", "alice", 1)
	refused(t, l, "198.51.100.2", "alice", LimitName, 6*time.Second)
	// ...and the address keeps its earlier failures: 9 spent.
	failNames(t, l, "192.0.2.1", 1)
	refused(t, l, "192.0.2.1", "carol", LimitAddress, 30*time.Second)
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
	// An aborted attempt leaves no bucket behind (the one it made is
	// full again).
	if n := l.addrs.len() + l.pairs.len() + l.names.len(); n != 0 {
		t.Errorf("%d buckets left by aborted attempts", n)
	}
	// An attempt never ended counts as failed; a second ending does
	// not undo the first.
	for range LoginNameFailures {
		a, err := l.Begin("192.0.2.1", "alice")
		if err != nil || a == nil {
			t.Fatal(err)
		}
	}
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
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
	refused(t, l2, "192.0.2.1", "alice", LimitName, time.Minute)
}

// TestLoginLimiterAbortShared: aborting an attempt whose bucket another
// attempt has used since gives back only its own reservation.
func TestLoginLimiterAbortShared(t *testing.T) {
	l, _ := newLimiter()
	first, err := l.Begin("192.0.2.1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures-1)
	first.Abort()
	fail(t, l, "192.0.2.1", "alice", 1)
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
}

// TestLoginLimiterParallel: attempts racing each other cannot overshoot
// the budget, since each reserves its failure before the password is
// checked.
func TestLoginLimiterParallel(t *testing.T) {
	for _, tc := range []struct {
		client func(int) string
		want   int
	}{
		{ipv4, LoginNameTotalFailures},
		{func(int) string { return "192.0.2.1" }, LoginNameFailures},
	} {
		l, _ := newLimiter()
		var let atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 200 {
			wg.Go(func() {
				<-start
				if a, err := l.Begin(tc.client(i), "alice"); err == nil {
					let.Add(1)
					a.Fail()
				}
			})
		}
		close(start)
		wg.Wait()
		if int(let.Load()) != tc.want {
			t.Errorf("%d parallel attempts let through, want %d", let.Load(), tc.want)
		}
	}
}

func TestLoginLimiterClockBack(t *testing.T) {
	l, clock := newLimiter()
	fail(t, l, "192.0.2.1", "alice", LoginNameFailures)
	clock.Advance(-time.Hour)
	refused(t, l, "192.0.2.1", "alice", LimitName, time.Minute)
	clock.Advance(time.Hour + time.Minute)
	fail(t, l, "192.0.2.1", "alice", 1)
}

// TestLoginLimiterBounded: at loginMaxKeys buckets, refilled ones make
// room; while every one is still draining, new keys share the overflow
// bucket, and a spent budget is never forgotten.
func TestLoginLimiterBounded(t *testing.T) {
	l, clock := newLimiter()
	// The victims: an address with a spent budget, and alice's budget
	// from another address.
	failNames(t, l, "198.51.100.7", LoginAddressFailures)
	fail(t, l, "198.51.100.8", "alice", LoginNameFailures)
	// A flood of new addresses, each failing a new name once.
	for i := range loginMaxKeys + 100 {
		a, err := l.Begin(ipv4(i), fmt.Sprintf("n%d", i))
		if err == nil {
			a.Fail()
		}
	}
	// Each flood attempt is a new pair: that set fills first.
	if l.pairs.len() != loginMaxKeys {
		t.Fatalf("%d pairs tracked, want %d", l.pairs.len(), loginMaxKeys)
	}
	for _, s := range []*bucketSet{&l.addrs, &l.pairs, &l.names} {
		if s.len() > loginMaxKeys || len(s.byFull) != s.len() {
			t.Fatalf("%d buckets tracked (%d in the heap); want at most %d", s.len(), len(s.byFull), loginMaxKeys)
		}
	}
	if !isRefused(t, l, "198.51.100.7", "x") {
		t.Error("a flood of new addresses reset a spent address budget")
	}
	if !isRefused(t, l, "198.51.100.8", "alice") {
		t.Error("a flood of new names reset a spent name budget")
	}
	// The overflow is one budget for all the keys that found no room:
	// it is spent now.
	if !isRefused(t, l, "203.0.113.1", "newcomer") {
		t.Error("new keys past the bound are not limited together")
	}
	// Once the flood's buckets refill, they make room again; the
	// victims' buckets, refilled too, are gone.
	clock.Advance(LoginWindow)
	fail(t, l, "203.0.113.1", "newcomer", LoginNameFailures)
	refused(t, l, "203.0.113.1", "newcomer", LimitName, time.Minute)
	for _, s := range []*bucketSet{&l.addrs, &l.pairs, &l.names} {
		if s.len() > loginMaxKeys || len(s.byFull) != s.len() {
			t.Fatalf("%d buckets tracked, %d in the heap", s.len(), len(s.byFull))
		}
	}
}

func setKey(i int) [32]byte { return sha256.Sum256([]byte(fmt.Sprint(i))) }

// TestBucketSetOverflow: a full set of draining buckets puts new keys
// in one shared bucket and forgets none.
func TestBucketSetOverflow(t *testing.T) {
	var s bucketSet
	s.init(2)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range loginMaxKeys {
		if b := s.take(setKey(i), now); b == &s.overflow {
			t.Fatalf("key %d went to the overflow", i)
		}
	}
	s.take(setKey(0), now) // the victim: spent
	for i := range 2 {
		if s.wait(setKey(loginMaxKeys+i), now) != 0 {
			t.Fatal("the overflow is not full at first")
		}
		if b := s.take(setKey(loginMaxKeys+i), now); b != &s.overflow {
			t.Fatalf("new key %d got its own bucket in a full set", i)
		}
	}
	if s.wait(setKey(loginMaxKeys+5), now) == 0 || s.wait(setKey(0), now) == 0 {
		t.Error("the spent overflow or the spent victim let a key through")
	}
	if s.wait(setKey(1), now) != 0 {
		t.Error("a tracked key with a token left is refused")
	}
	if s.len() != loginMaxKeys || len(s.byFull) != loginMaxKeys {
		t.Fatalf("%d tracked", s.len())
	}
	// Giving back to the overflow refills it only by that token, and
	// never tracks it.
	s.give(&s.overflow, now)
	if s.wait(setKey(loginMaxKeys+5), now) != 0 || s.len() != loginMaxKeys {
		t.Error("give to the overflow")
	}
	// Half a window on, every bucket but the victim's is full again
	// (each had one of two tokens spent): they make room.
	now = now.Add(LoginWindow / 2)
	if b := s.take(setKey(loginMaxKeys+9), now); b == &s.overflow || s.len() != 2 {
		t.Fatalf("%d tracked after refilling; overflow=%v", s.len(), b == &s.overflow)
	}
	if s.m[setKey(0)] == nil {
		t.Fatal("the draining victim was dropped")
	}
}

// TestBucketSetRefillOrder: making room drops the buckets that are full
// again, however recently they were used, and keeps the draining ones,
// however long ago.
func TestBucketSetRefillOrder(t *testing.T) {
	var s bucketSet
	s.init(LoginAddressFailures)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for range LoginAddressFailures {
		s.take(setKey(-1), now) // spent first: full last
	}
	now = now.Add(time.Minute)
	for i := range loginMaxKeys - 1 {
		s.take(setKey(i), now) // each 30 s from full
	}
	now = now.Add(30 * time.Second)
	if b := s.take(setKey(loginMaxKeys), now); b == &s.overflow || s.len() != 2 || s.m[setKey(-1)] == nil {
		t.Fatalf("%d tracked; the spent one must be one of them", s.len())
	}
	// A bucket given its token back while others drain is dropped at
	// once: a full bucket tells nothing.
	b := s.take(setKey(7), now)
	s.give(b, now)
	if s.m[setKey(7)] != nil || b.index != -1 || len(s.byFull) != s.len() {
		t.Error("a full bucket was kept")
	}
	s.give(b, now) // no longer tracked: nothing happens
	if s.m[setKey(7)] != nil {
		t.Error("a dropped bucket came back")
	}
}

// FuzzLoginClientKey: every client is refused or reduced to an IP's
// key, the same as the bare IP's.
func FuzzLoginClientKey(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "192.0.2.1:80", "[2001:db8::1]:443", "::ffff:192.0.2.1", "[fe80::1%eth0]:1", "x", "", "[::1]", "1.2.3.4:99999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, client string) {
		key, err := loginClientKey(client)
		if err != nil {
			if err != ErrNotIP || key != "" {
				t.Fatalf("%q: %q %v", client, key, err)
			}
			return
		}
		addr, perr := netip.ParseAddr(client)
		if perr != nil {
			ap, aerr := netip.ParseAddrPort(client)
			if aerr != nil {
				t.Fatalf("%q accepted but is no IP", client)
			}
			addr = ap.Addr()
		}
		if again, _ := loginClientKey(addr.String()); again != key {
			t.Fatalf("%q: key %q, its IP's %q", client, key, again)
		}
		if p, err := netip.ParsePrefix(key); err == nil {
			if p.Bits() != 64 || !p.Addr().Is6() {
				t.Fatalf("%q: key %q", client, key)
			}
		} else if a, err := netip.ParseAddr(key); err != nil || !a.Is4() {
			t.Fatalf("%q: key %q is neither an IPv4 address nor a /64", client, key)
		}
	})
}

// TestLoginLimiterReserved: the admin token's sign-in is limited like
// a name (Begin refuses the reserved name outright).
func TestLoginLimiterReserved(t *testing.T) {
	l, _ := newLimiter()
	if _, err := l.Begin("192.0.2.1", AdminTokenName); !errors.Is(err, ErrWrongLogin) {
		t.Fatalf("Begin(admin-token): %v", err)
	}
	for i := range LoginNameFailures {
		a, err := l.BeginReserved("192.0.2.9", AdminTokenName)
		if err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		a.Fail()
	}
	var limited *RateLimitError
	if _, err := l.BeginReserved("192.0.2.9", AdminTokenName); !errors.As(err, &limited) {
		t.Fatalf("after %d failures: %v, want rate limited", LoginNameFailures, err)
	}
}
