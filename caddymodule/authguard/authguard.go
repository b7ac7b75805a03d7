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
	DefaultLogEvery = 10 * time.Second // one summary line per limited address
	maxAddresses    = 10000            // addresses tracked at once
)

// Guard is safe for concurrent use. The zero value uses the defaults.
type Guard struct {
	Rate     float64
	Burst    int
	LogEvery time.Duration
	Now      func() time.Time // nil: time.Now

	mu sync.Mutex
	m  map[string]*bucket
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

// Fail records a failed authentication from addr (a Key).
func (g *Guard) Fail(addr string) Verdict {
	rate, burst, every := g.Rate, float64(g.Burst), g.LogEvery
	if rate <= 0 {
		rate = DefaultRate
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	if every <= 0 {
		every = DefaultLogEvery
	}
	now := time.Now()
	if g.Now != nil {
		now = g.Now()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
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
