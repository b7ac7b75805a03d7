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
	return cached(&c.mu, &c.m, s.key(), func() *Redactor { return newRedactor(s.forms(), c.matcher) })
}

// matcher returns the shared matcher for pats (folded, in rank order).
func (c *Cache) matcher(pats []string) *matcher {
	n := 0
	for _, p := range pats {
		n += 9 + len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range pats {
		b = appendPart(b, 'm', p)
	}
	return cached(&c.mu, &c.matchers, sha256.Sum256(b), func() *matcher { return newMatcher(pats) })
}

// cached returns (*m)[key], or else build's result, stored under key.
// It builds outside the lock (building is the slow part; two callers
// may both build, and either result is right); past maxCachedRedactors
// entries the map starts over.
func cached[V any](mu *sync.Mutex, m *map[[sha256.Size]byte]V, key [sha256.Size]byte, build func() V) V {
	mu.Lock()
	v, ok := (*m)[key]
	mu.Unlock()
	if ok {
		return v
	}
	v = build()
	mu.Lock()
	defer mu.Unlock()
	if *m == nil || len(*m) >= maxCachedRedactors {
		*m = make(map[[sha256.Size]byte]V)
	}
	(*m)[key] = v
	return v
}
