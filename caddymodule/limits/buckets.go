package limits

import (
	"sync"
	"time"
)

// Buckets are token buckets by key (a session and a service): each
// holds up to count tokens and refills count per per; a request takes
// one.
type Buckets struct {
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	mu        sync.Mutex
	m         map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
	full   time.Duration
}

// sweepEvery is how often Take forgets the buckets that have refilled.
const sweepEvery = time.Minute

// Take takes a token from key's bucket of count per per, creating it
// full. When the bucket is empty it returns false and how long until
// a token is back.
func (b *Buckets) Take(key string, count int, per time.Duration) (bool, time.Duration) {
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	t := now()
	rate := float64(count) / per.Seconds() // tokens per second
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[string]*bucket)
		b.lastSweep = t
	}
	if t.Sub(b.lastSweep) >= sweepEvery {
		b.sweep(t)
	}
	k, ok := b.m[key]
	if !ok {
		k = &bucket{tokens: float64(count), at: t, full: per}
		b.m[key] = k
	} else if elapsed := t.Sub(k.at); elapsed > 0 {
		k.tokens = min(float64(count), k.tokens+elapsed.Seconds()*rate)
		k.at = t
	}
	// A service whose rate changed (a reload) keeps the bucket: its
	// size follows the new count.
	k.tokens, k.full = min(k.tokens, float64(count)), per
	if k.tokens >= 1 {
		k.tokens--
		return true, 0
	}
	wait := time.Duration((1 - k.tokens) / rate * float64(time.Second))
	return false, max(wait, time.Millisecond)
}

// sweep forgets the buckets that have been idle long enough to refill
// whole. Called with mu held.
func (b *Buckets) sweep(now time.Time) {
	b.lastSweep = now
	for key, k := range b.m {
		if now.Sub(k.at) >= k.full {
			delete(b.m, key)
		}
	}
}

// Len is how many buckets are kept.
func (b *Buckets) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}
