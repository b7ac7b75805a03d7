// Package authguard keeps failed proxy authentications cheap and quiet.
//
// It counts failures per client address in a token bucket. Within the
// budget every failure is logged and answered as usual; past it, the
// proxy still checks each token (a valid session is never locked out by
// another process guessing from the same address: on a laptop every
// agent connects from 127.0.0.1), but a failure is answered with
// Retry-After and logged only as one summary line per address per
// LogEvery, with the number of failures it stands for. Session tokens
// carry 256 random bits, so the point is the log and the CPU an
// unlimited stream of bad tokens costs, not guessing.
//
// Lines are also bounded across all addresses, since an attacker with
// many addresses (an IPv6 /48 holds 65 536 /64s, each its own budget)
// would otherwise still flood the log: a second token bucket, LogRate
// lines per second with a burst of LogBurst, decides whether a line an
// address may write is written. A line it drops is counted instead, and
// Summary receives the count at most once per LogEvery, from a timer
// armed by the first dropped line. That bound only touches logging: the
// answers (407, Retry-After) stay per address. Close stops the timer and
// reports what is pending at once, so a Guard that is done with (the
// proxy of a configuration Caddy has replaced) logs nothing later.
package authguard

import (
	"net/netip"
	"sync"
	"time"
)

// Defaults for a zero Guard.
const (
	DefaultRate     = 10               // failures per second an address may make
	DefaultBurst    = 50               // ...and in one burst
	DefaultLogEvery = 10 * time.Second // one summary line per limited address, and for the global bound
	DefaultLogRate  = 5                // log lines per second, all addresses together
	// DefaultLogBurst is twice one address's burst, so that a single
	// noisy address (on a laptop every agent is 127.0.0.1) is logged in
	// full: its burst of lines, then its summary.
	DefaultLogBurst = 2 * DefaultBurst
	maxAddresses    = 10000 // addresses tracked at once
)

// Guard is safe for concurrent use. The zero value uses the defaults.
type Guard struct {
	Rate     float64 // per address
	Burst    int     // per address
	LogEvery time.Duration
	LogRate  float64 // log lines, all addresses together
	LogBurst int     // log lines, all addresses together

	// Summary, if set, is called with the number of failures whose log
	// line the global bound dropped, at most once per LogEvery and
	// LogEvery after the first of them (on its own goroutine, without
	// the Guard's lock), and by Close with what is still pending. Nil:
	// the counts are not reported.
	Summary func(dropped int)

	Now       func() time.Time                      // nil: time.Now
	AfterFunc func(d time.Duration, f func()) Timer // nil: time.AfterFunc; for tests

	// reportMu is held while Summary runs, so Close returns only once
	// no call is under way.
	reportMu sync.Mutex

	mu sync.Mutex
	m  map[string]*bucket

	lines     float64   // the global bucket's tokens (log lines)
	linesLast time.Time // of its last refill; zero: never used
	dropped   int       // failures of dropped lines not yet summarised
	timer     Timer     // the scheduled Summary call, if any
	closed    bool      // set by Close: nothing more is counted or scheduled
}

// Timer is what AfterFunc returns: a *time.Timer, or a test's stand-in.
type Timer interface {
	Stop() bool
}

type bucket struct {
	tokens     float64
	last       time.Time // of the last refill
	suppressed int       // failures not logged since loggedAt
	loggedAt   time.Time
}

// Verdict is what to do with one failed authentication.
type Verdict struct {
	// Limited: the address is over its budget; answer with RetryAfter.
	Limited    bool
	RetryAfter time.Duration
	// Log: write a log line for this failure; Suppressed failures (from
	// the same address, since the last line) are summarised in it.
	Log        bool
	Suppressed int
	// Dropped: the address could have logged this failure, but the
	// global bound dropped the line; it is counted for Summary.
	Dropped bool
}

// Key is the address failures are counted under: an IPv4 address (also
// when written IPv4-mapped), or the /64 an IPv6 address belongs to, since
// one host usually holds a whole /64. Anything else counts as itself.
func Key(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return addr.String()
	}
	p, _ := addr.Prefix(64)
	return p.String()
}

// failAddress applies addr's own budget; g.mu is held.
func (g *Guard) failAddress(addr string, now time.Time) Verdict {
	rate, burst, every := g.Rate, float64(g.Burst), g.every()
	if rate <= 0 {
		rate = DefaultRate
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	if g.m == nil {
		g.m = make(map[string]*bucket)
	}
	b := g.m[addr]
	if b == nil {
		if len(g.m) >= maxAddresses {
			g.sweep(now, rate, burst)
		}
		b = &bucket{tokens: burst, last: now}
		g.m[addr] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return Verdict{Log: true}
	}
	v := Verdict{Limited: true, RetryAfter: time.Duration((1 - b.tokens) / rate * float64(time.Second))}
	if v.RetryAfter < time.Second {
		v.RetryAfter = time.Second
	}
	b.suppressed++
	if now.Sub(b.loggedAt) >= every {
		v.Log, v.Suppressed = true, b.suppressed
		b.suppressed, b.loggedAt = 0, now
	}
	return v
}

// Fail records a failed authentication from addr (a Key).
func (g *Guard) Fail(addr string) Verdict {
	now := time.Now()
	if g.Now != nil {
		now = g.Now()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.failAddress(addr, now)
	if v.Log && !g.takeLine(now) {
		// The failures the line stood for go into the global count.
		n := 1
		if v.Limited {
			n = v.Suppressed
		}
		v.Log, v.Suppressed, v.Dropped = false, 0, true
		if g.closed {
			return v // see Close
		}
		g.dropped += n
		if g.timer == nil && g.Summary != nil {
			after := g.AfterFunc
			if after == nil {
				after = func(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
			}
			g.timer = after(g.every(), g.summarise)
		}
	}
	return v
}

// takeLine takes a token from the global bucket of log lines.
func (g *Guard) takeLine(now time.Time) bool {
	rate, burst := g.LogRate, float64(g.LogBurst)
	if rate <= 0 {
		rate = DefaultLogRate
	}
	if burst <= 0 {
		burst = DefaultLogBurst
	}
	if g.linesLast.IsZero() {
		g.lines = burst
	} else if elapsed := now.Sub(g.linesLast).Seconds(); elapsed > 0 {
		g.lines = min(burst, g.lines+elapsed*rate)
	}
	g.linesLast = now
	if g.lines >= 1 {
		g.lines--
		return true
	}
	return false
}

// summarise hands the count of dropped lines' failures to Summary; the
// timer calls it.
func (g *Guard) summarise() {
	g.reportMu.Lock()
	defer g.reportMu.Unlock()
	g.mu.Lock()
	if g.closed {
		// Close stopped the timer too late and reported the count.
		g.mu.Unlock()
		return
	}
	n := g.dropped
	g.dropped, g.timer = 0, nil
	g.mu.Unlock()
	if n > 0 {
		g.Summary(n)
	}
}

// Close stops the summary timer and hands Summary, before it returns,
// the failures whose lines were dropped since the last summary; no
// Summary call is under way or to come once it has. Fail still answers
// afterwards, but the lines it drops are no longer summarised. Safe to
// call more than once.
func (g *Guard) Close() {
	g.reportMu.Lock()
	defer g.reportMu.Unlock()
	g.mu.Lock()
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	n := g.dropped
	g.dropped = 0
	g.mu.Unlock()
	if n > 0 && g.Summary != nil {
		g.Summary(n)
	}
}

func (g *Guard) every() time.Duration {
	if g.LogEvery <= 0 {
		return DefaultLogEvery
	}
	return g.LogEvery
}

// sweep forgets addresses whose bucket has refilled (they are back to
// a clean slate anyway); if none has, it starts over, which errs on
// the side of answering, never of remembering without bound.
func (g *Guard) sweep(now time.Time, rate, burst float64) {
	for a, b := range g.m {
		if b.tokens+now.Sub(b.last).Seconds()*rate >= burst {
			delete(g.m, a)
		}
	}
	if len(g.m) >= maxAddresses {
		g.m = make(map[string]*bucket)
	}
}
