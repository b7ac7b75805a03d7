package identity

import (
	"container/heap"
	"crypto/sha256"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/authguard"
)

// Failed-login budgets: token buckets that refill continuously, each
// holding at most its number of failures and getting them back evenly
// over LoginWindow (10 per window is one back every 30 s).
const (
	// LoginAddressFailures is the budget of one client address (an
	// IPv4 address, or an IPv6 /64), whatever names it tries.
	LoginAddressFailures = 10
	// LoginNameFailures is the budget of one name from one client
	// address: an address that spends it is refused that name, but it
	// cannot lock the name's operator out from elsewhere.
	LoginNameFailures = 5
	// LoginNameTotalFailures is the budget of one name from all
	// addresses together, so that guessing spread over many addresses
	// stays bounded. Its price: many addresses together can slow that
	// operator's own logins (one attempt let through every 6 s).
	LoginNameTotalFailures = 50
	LoginWindow            = 5 * time.Minute
	// loginMaxKeys bounds the buckets of each budget (addresses, name
	// and address pairs, names).
	loginMaxKeys = 10000
)

// Subjects of a RateLimitError, as its text says them. Neither names
// the name tried (it may be a password typed into the wrong field) nor
// the address.
const (
	LimitAddress = "from this address"
	LimitName    = "for this name"
)

// ErrWrongLogin is the answer to a failed login, the same whether the
// name exists or the password is wrong (401, "wrong operator name or
// password"). Begin returns it for a name that cannot be an operator's.
// errors.As gives a fresh *UnauthenticatedError for it.
var ErrWrongLogin error = unauthenticated("wrong operator name or password")

// ErrNotIP is Begin's error for a client that is not an IP address
// (the API listens on a Unix socket, or a bug passed something else):
// the server's fault (its HTTPStatus is 500), since every client must
// be counted and none may be a budget of its own. Compare with
// errors.Is.
var ErrNotIP error = serverError("identity: a login's client address must be an IP address, ip:port or [ip]:port")

// LoginLimiter limits failed logins per client address (an IPv6
// address counts as its /64, as in authguard.Key), per name from each
// address, and per name from all addresses together (see the Login*
// constants), so that passwords cannot be guessed quickly from one
// place or against one operator, while one address cannot lock an
// operator out. It is safe for concurrent use; the zero value is
// ready.
//
// Each attempt reserves one failure from all three budgets before the
// password is checked (so parallel attempts cannot overshoot), and
// gives it back as its outcome says: see LoginAttempt.
//
// Memory is bounded: each budget tracks at most 10000 keys. A bucket
// that has refilled carries no information and is dropped to make
// room; when every tracked bucket is still draining, new keys share
// one overflow bucket of the same size, so that a flood of new
// addresses or names never makes room by forgetting a spent budget.
type LoginLimiter struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	addrs bucketSet // by address key
	pairs bucketSet // by name and address key
	names bucketSet // by name
}

// LoginAttempt is one login Begin let through. Exactly one of Fail,
// Succeed and Abort should end it; later calls do nothing, and an
// attempt never ended counts as failed.
type LoginAttempt struct {
	l *LoginLimiter
	// the buckets it reserved a failure of; guarded by l.mu
	addr, pair, name *loginBucket
	done             bool
}

// Begin lets a login attempt from client for name through, reserving
// one failure of each budget, or refuses it:
//   - client is r.RemoteAddr (ip:port or [ip]:port) or a bare IP; it is
//     reduced to its IP, and an IPv6 one to its /64. Anything else is
//     ErrNotIP.
//   - a name that cannot be an operator's (ValidName) is a failed login
//     at once, ErrWrongLogin (the API answers it like any other, 401),
//     that costs the address one failure of its budget (kept spent): it
//     needs no lookup and no password check, but must not be a way to
//     send unlimited requests. Over the address's budget it is a
//     *RateLimitError like any other attempt. It makes no name bucket:
//     nothing can be guessed there.
//   - over a budget, a *RateLimitError (429; the password must then not
//     be checked) saying which budget is spent, LimitAddress or
//     LimitName, and when to retry (the later one when several are).
//
// No error repeats the name or the client.
func (l *LoginLimiter) Begin(client, name string) (*LoginAttempt, error) {
	return l.begin(client, name, false)
}

// BeginReserved is Begin for a reserved name no operator can have
// (AdminTokenName: the admin token's sign-in), which it counts like a
// valid name instead of refusing it.
func (l *LoginLimiter) BeginReserved(client, name string) (*LoginAttempt, error) {
	return l.begin(client, name, true)
}

func (l *LoginLimiter) begin(client, name string, reserved bool) (*LoginAttempt, error) {
	addrKey, err := loginClientKey(client)
	if err != nil {
		return nil, err
	}
	ak := sha256.Sum256([]byte(addrKey))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	now := l.now()
	addrWait := l.addrs.wait(ak, now)
	if !reserved && ValidName(OperatorName, name) != nil {
		if addrWait > 0 {
			return nil, rateLimited(LimitAddress, addrWait)
		}
		l.addrs.take(ak, now)
		return nil, ErrWrongLogin
	}
	// A valid name holds no NUL, so the pair's key is unambiguous.
	pk := sha256.Sum256([]byte(name + "\x00" + addrKey))
	nk := sha256.Sum256([]byte(name))
	nameWait := max(l.pairs.wait(pk, now), l.names.wait(nk, now))
	if addrWait > 0 || nameWait > 0 {
		if nameWait > addrWait {
			return nil, rateLimited(LimitName, nameWait)
		}
		return nil, rateLimited(LimitAddress, addrWait)
	}
	return &LoginAttempt{l: l, addr: l.addrs.take(ak, now), pair: l.pairs.take(pk, now), name: l.names.take(nk, now)}, nil
}

// rateLimited is the refusal of a spent budget, retrying in whole
// seconds, rounded up, so that a client waiting that long is let
// through.
func rateLimited(subject string, wait time.Duration) *RateLimitError {
	return &RateLimitError{Subject: subject, RetryAfter: max(time.Second, (wait + time.Second - 1).Truncate(time.Second))}
}

// loginClientKey reduces r.RemoteAddr, or a bare IP, to its
// authguard.Key.
func loginClientKey(client string) (string, error) {
	addr, err := netip.ParseAddr(client)
	if err != nil {
		ap, err := netip.ParseAddrPort(client)
		if err != nil {
			return "", ErrNotIP
		}
		addr = ap.Addr()
	}
	return authguard.Key(addr.String()), nil
}

// Fail ends a login whose name or password was wrong: the reserved
// failures stay spent.
func (a *LoginAttempt) Fail() {
	a.l.mu.Lock()
	a.done = true
	a.l.mu.Unlock()
}

// Succeed ends a login that succeeded: the budget of the name from this
// address is full again; the address and the name's total get back only
// this attempt's reservation (their earlier failures stay counted, so
// success tells an attacker nothing new and does not refund guesses
// made from elsewhere).
func (a *LoginAttempt) Succeed() {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	if a.done {
		return
	}
	a.done = true
	now := a.l.now()
	a.l.addrs.give(a.addr, now)
	a.l.pairs.reset(a.pair, now)
	a.l.names.give(a.name, now)
}

// Abort ends a login the server could not decide (its store failed):
// every reservation is given back, since the client failed nothing, and
// a bucket that is full again (as one this attempt created is, unless
// another attempt has used it since) is dropped.
func (a *LoginAttempt) Abort() {
	a.l.mu.Lock()
	defer a.l.mu.Unlock()
	if a.done {
		return
	}
	a.done = true
	now := a.l.now()
	a.l.addrs.give(a.addr, now)
	a.l.pairs.give(a.pair, now)
	a.l.names.give(a.name, now)
}

func (l *LoginLimiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// init sizes the budgets the first time; l.mu is held.
func (l *LoginLimiter) init() {
	if l.addrs.m == nil {
		l.addrs.init(LoginAddressFailures)
		l.pairs.init(LoginNameFailures)
		l.names.init(LoginNameTotalFailures)
	}
}

// bucketSet is a bounded set of token buckets of one size, keyed by a
// hash (so that a long key costs no more memory than a short one).
type bucketSet struct {
	burst int
	m     map[[32]byte]*loginBucket
	// byFull orders the tracked buckets by when they are full again,
	// so that making room finds the refilled ones at once.
	byFull bucketHeap
	// overflow is shared by the keys that found the set full of
	// draining buckets; it is never in m.
	overflow loginBucket
}

type loginBucket struct {
	key    [32]byte
	tokens float64
	last   time.Time // of the last refill
	full   time.Time // when it holds burst tokens again
	index  int       // in byFull; -1 when not tracked (and for overflow)
}

func (s *bucketSet) init(burst int) {
	s.burst = burst
	s.m = make(map[[32]byte]*loginBucket)
	// A zero last time refills it to burst on first use.
	s.overflow = loginBucket{tokens: float64(burst), index: -1}
}

// refill brings b up to now at burst per LoginWindow. A clock that went
// back refills nothing.
func (b *loginBucket) refill(now time.Time, burst int) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(float64(burst), b.tokens+d.Seconds()*float64(burst)/LoginWindow.Seconds())
		b.last = now
	}
}

// find returns key's bucket: the tracked one; nil when key would get a
// fresh (full) one; the overflow bucket when there is no room even
// after dropping the refilled buckets.
func (s *bucketSet) find(key [32]byte, now time.Time) *loginBucket {
	if b := s.m[key]; b != nil {
		return b
	}
	if len(s.m) >= loginMaxKeys {
		for len(s.byFull) > 0 && !s.byFull[0].full.After(now) {
			s.remove(s.byFull[0])
		}
		if len(s.m) >= loginMaxKeys {
			return &s.overflow
		}
	}
	return nil
}

// wait is how long until key's bucket holds a whole token: 0 if it
// does now.
func (s *bucketSet) wait(key [32]byte, now time.Time) time.Duration {
	b := s.find(key, now)
	if b == nil {
		return 0
	}
	b.refill(now, s.burst)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * LoginWindow.Seconds() / float64(s.burst) * float64(time.Second))
}

// take spends one token of key's bucket, tracking a new one if needed,
// and returns the bucket. wait must have said 0.
func (s *bucketSet) take(key [32]byte, now time.Time) *loginBucket {
	b := s.find(key, now)
	if b == nil {
		b = &loginBucket{key: key, tokens: float64(s.burst), last: now}
		s.m[key] = b
		heap.Push(&s.byFull, b)
	}
	b.refill(now, s.burst)
	b.tokens--
	s.update(b, now)
	return b
}

// give returns one token to b, which take returned, and drops b if that
// makes it full. A bucket no longer tracked (it refilled and was
// dropped) gets nothing.
func (s *bucketSet) give(b *loginBucket, now time.Time) {
	if b.index < 0 && b != &s.overflow {
		return
	}
	b.refill(now, s.burst)
	b.tokens = math.Min(float64(s.burst), b.tokens+1)
	if b != &s.overflow && b.tokens >= float64(s.burst) {
		s.remove(b)
		return
	}
	s.update(b, now)
}

// reset makes b, which take returned, full again: dropped, or for the
// overflow bucket, which others share, just this attempt's token given
// back.
func (s *bucketSet) reset(b *loginBucket, now time.Time) {
	switch {
	case b == &s.overflow:
		s.give(b, now)
	case b.index >= 0:
		s.remove(b)
	}
}

// update sets when b is full again after a change of its tokens.
func (s *bucketSet) update(b *loginBucket, now time.Time) {
	missing := float64(s.burst) - b.tokens
	b.full = now.Add(time.Duration(missing * LoginWindow.Seconds() / float64(s.burst) * float64(time.Second)))
	if b.index >= 0 {
		heap.Fix(&s.byFull, b.index)
	}
}

func (s *bucketSet) remove(b *loginBucket) {
	heap.Remove(&s.byFull, b.index)
	delete(s.m, b.key)
}

// len is the number of buckets tracked.
func (s *bucketSet) len() int { return len(s.m) }

// bucketHeap is a container/heap of buckets, the one full soonest
// first.
type bucketHeap []*loginBucket

func (h bucketHeap) Len() int           { return len(h) }
func (h bucketHeap) Less(i, j int) bool { return h[i].full.Before(h[j].full) }
func (h bucketHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *bucketHeap) Push(x any) {
	b := x.(*loginBucket)
	b.index = len(*h)
	*h = append(*h, b)
}

func (h *bucketHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	b.index = -1
	*h = old[:len(old)-1]
	return b
}
