package scrub

import (
	"crypto/sha256"
	"sync"
)

// Cache keeps built redactors: building one checks every stand-in
// against every secret, which showed up as a sixth of the proxy's CPU
// when done per request, and the same few secret sets recur. The zero
// value is ready; it is safe for concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*Redactor
	// matchers are shared by redactors with the same patterns and
	// different stand-ins (each session has its own placeholders): the
	// matcher is most of a redactor's memory and build time.
	matchers map[[sha256.Size]byte]*matcher
}

// maxCachedRedactors bounds each of the cache's maps; past it, that map
// starts over.
const maxCachedRedactors = 1024

// Redactor returns the redactor for s, or nil when s is empty.
func (c *Cache) Redactor(s *SecretSet) *Redactor {
	if s.Empty() {
		return nil
	}
	key := s.key()
	c.mu.Lock()
	if r, ok := c.m[key]; ok {
		c.mu.Unlock()
		return r
	}
	c.mu.Unlock()
	r := newRedactor(s.forms(), c.matcher) // built outside the lock: it is the slow part
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedRedactors {
		c.m = make(map[[sha256.Size]byte]*Redactor)
	}
	c.m[key] = r
	return r
}

// matcher returns the shared matcher for pats (folded, in rank order),
// building it outside the lock when it is new.
func (c *Cache) matcher(pats []string) *matcher {
	n := 0
	for _, p := range pats {
		n += 9 + len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range pats {
		b = appendPart(b, 'm', p)
	}
	key := sha256.Sum256(b)
	c.mu.Lock()
	m, ok := c.matchers[key]
	c.mu.Unlock()
	if ok {
		return m
	}
	m = newMatcher(pats)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.matchers == nil || len(c.matchers) >= maxCachedRedactors {
		c.matchers = make(map[[sha256.Size]byte]*matcher)
	}
	c.matchers[key] = m
	return m
}
