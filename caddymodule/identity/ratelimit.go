package identity

import (
	"container/list"
	"crypto/sha256"
	"math"
	"sync"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/authguard"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
)

// Failed-login budgets: token buckets that refill continuously, so a
// client address may fail LoginAddressFailures times and a name
// LoginNameFailures times per LoginWindow, in bursts up to those
// numbers.
const (
	LoginAddressFailures = 10
	LoginNameFailures    = 5
	LoginWindow          = 5 * time.Minute
	// loginMaxKeys bounds the addresses, and separately the names,
	// tracked at once; the least recently used is forgotten first.
	loginMaxKeys = 10000
)

// LoginLimiter limits failed logins per client address (an IPv6
// address counts as its /64, as in authguard.Key) and per name, so
// that passwords cannot be guessed quickly from one place or against
// one operator. It is safe for concurrent use; the zero value is ready.
//
// Each attempt reserves one failure from both budgets before the
// password is checked (so parallel attempts cannot overshoot), and
// gives it back as its outcome says: see LoginAttempt.
type LoginLimiter struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	addrs bucketSet
	names bucketSet
}

// LoginAttempt is one login Begin let through. Exactly one of Fail,
// Succeed and Abort should end it; later calls do nothing, and an
// attempt never ended counts as failed.
type LoginAttempt struct {
	l          *LoginLimiter
	addr, name [32]byte
	done       bool // guarded by l.mu
}

// Begin lets a login attempt from client (the client's IP address, as
// in r.RemoteAddr) for name through, reserving one failure of both
// budgets, or refuses it with a *RateLimitError (the password must then
// not be checked) saying which budget is spent and when to retry (the
// later of the two when both are).
func (l *LoginLimiter) Begin(client, name string) (*LoginAttempt, error) {
	addrKey := authguard.Key(client)
	a := &LoginAttempt{l: l, addr: sha256.Sum256([]byte(addrKey)), name: sha256.Sum256([]byte(name))}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	addrWait := l.addrs.wait(a.addr, now, LoginAddressFailures)
	nameWait := l.names.wait(a.name, now, LoginNameFailures)
	if addrWait > 0 || nameWait > 0 {
		e := &RateLimitError{Subject: "address " + addrKey, RetryAfter: addrWait}
		if len(addrKey) > 64 {
			e.Subject = "this address"
		}
		if nameWait > addrWait {
			e.Subject, e.RetryAfter = "this name", nameWait
			if services.IsValidName(name) {
				e.Subject = "operator " + name
			}
		}
		// Whole seconds, rounded up, so that a client waiting that long
		// is let through.
		e.RetryAfter = max(time.Second, (e.RetryAfter + time.Second - 1).Truncate(time.Second))
		return nil, e
	}
	l.addrs.take(a.addr, now, LoginAddressFailures)
	l.names.take(a.name, now, LoginNameFailures)
	return a, nil
}

// Fail ends a login whose name or password was wrong: the reserved
// failures stay spent.
func (a *LoginAttempt) Fail() {
	a.l.mu.Lock()
	a.done = true
	a.l.mu.Unlock()
}

// Succeed ends a login that succeeded: the name's budget is full again
// and the address gets back only this attempt's reservation (its
// earlier failures stay counted, so success tells an attacker nothing
// new about the address budget).
func (a *LoginAttempt) Succeed() {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	if a.done {
		return
	}
	a.done = true
	now := a.l.now()
	a.l.addrs.give(a.addr, now, LoginAddressFailures)
	a.l.names.forget(a.name)
}

// Abort ends a login the server could not decide (its store failed):
// both reservations are given back, since the client failed nothing.
func (a *LoginAttempt) Abort() {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	if a.done {
		return
	}
	a.done = true
	now := a.l.now()
	a.l.addrs.give(a.addr, now, LoginAddressFailures)
	a.l.names.give(a.name, now, LoginNameFailures)
}

func (l *LoginLimiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// bucketSet is a bounded set of token buckets keyed by a hash (so that
// a long name costs no more memory than a short one), least recently
// used last.
type bucketSet struct {
	m   map[[32]byte]*list.Element // of *loginBucket
	lru list.List
}

type loginBucket struct {
	key    [32]byte
	tokens float64
	last   time.Time // of the last refill
}

// refill brings b up to now at burst per LoginWindow. A clock that went
// back refills nothing.
func (b *loginBucket) refill(now time.Time, burst int) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(float64(burst), b.tokens+d.Seconds()*float64(burst)/LoginWindow.Seconds())
		b.last = now
	}
}

// wait is how long until key's bucket holds a whole token: 0 if it
// does now (an unknown key has a full bucket).
func (s *bucketSet) wait(key [32]byte, now time.Time, burst int) time.Duration {
	e := s.m[key]
	if e == nil {
		return 0
	}
	b := e.Value.(*loginBucket)
	b.refill(now, burst)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * LoginWindow.Seconds() / float64(burst) * float64(time.Second))
}

// take spends one token of key's bucket, creating it (full) if needed
// and forgetting the least recently used bucket when the set is full.
func (s *bucketSet) take(key [32]byte, now time.Time, burst int) {
	if s.m == nil {
		s.m = make(map[[32]byte]*list.Element)
	}
	e := s.m[key]
	if e == nil {
		if len(s.m) >= loginMaxKeys {
			old := s.lru.Back()
			s.lru.Remove(old)
			delete(s.m, old.Value.(*loginBucket).key)
		}
		e = s.lru.PushFront(&loginBucket{key: key, tokens: float64(burst), last: now})
		s.m[key] = e
	} else {
		s.lru.MoveToFront(e)
	}
	b := e.Value.(*loginBucket)
	b.refill(now, burst)
	b.tokens--
}

// give returns one token to key's bucket, if it is still tracked.
func (s *bucketSet) give(key [32]byte, now time.Time, burst int) {
	if e := s.m[key]; e != nil {
		b := e.Value.(*loginBucket)
		b.refill(now, burst)
		b.tokens = math.Min(float64(burst), b.tokens+1)
	}
}

// forget drops key's bucket: it is full again.
func (s *bucketSet) forget(key [32]byte) {
	if e := s.m[key]; e != nil {
		s.lru.Remove(e)
		delete(s.m, key)
	}
}

// len is the number of buckets tracked.
func (s *bucketSet) len() int { return len(s.m) }
