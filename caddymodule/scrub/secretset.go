package scrub

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
)

// Redacted stands in for a secret form that has no placeholder of its
// own (an encoded Basic header, a credential the session holds no
// placeholder for).
const Redacted = "[agent-vault:redacted]"

// SecretSet is every form of every secret one request sent upstream,
// each with the stand-in the agent sees instead: the raw values and the
// encodings an upstream may echo them in (derived here), and the exact
// strings the request writers report (AddWritten). The redactor of the
// answer is built from it and nothing else. The zero value is empty and
// ready to use; a SecretSet is not safe for concurrent use.
//
// Adding only records; the forms are derived when a Cache builds a
// redactor it does not have yet, so the hot path (a cached set) does no
// escaping at all.
type SecretSet struct {
	added   []addedSecret
	written []string
}

type addedSecret struct{ secret, standIn string }

// Add registers a secret value and the encodings an upstream may echo
// it in, all to be replaced by standIn: the agent's placeholder for it,
// or Redacted. The encodings, for a value of at least 8 bytes, are its
// base64 (std and URL alphabets, padded and not, and the part that
// shows inside a larger base64 blob at any offset), its hex and its
// UTF-16 (both byte orders); URL, JSON and HTML escapes of the value
// are found by the Redactor's decoding view, and case does not matter.
// The raw value's stand-in is always standIn; an encoding already
// registered keeps its stand-in. A value with spaces or tabs at either
// end is also registered trimmed, because that is how HTTP sends it in
// a header (Go's transport trims header values).
func (s *SecretSet) Add(secret, standIn string) {
	if secret != "" {
		s.added = append(s.added, addedSecret{secret, standIn})
	}
}

// AddWritten registers bytes the proxy itself wrote that embed a secret
// (an encoded Basic header, an escaped query value): exactly what went
// on the wire, as the writer (services.Inject, services.RewriteRequest)
// reports it. They are matched as they are (case-insensitively, in both
// views) and replaced by Redacted unless Add registered the same string
// with a stand-in of its own.
func (s *SecretSet) AddWritten(forms ...string) {
	for _, form := range forms {
		if form != "" {
			s.written = append(s.written, form)
		}
	}
}

// Empty reports whether no secret was registered.
func (s *SecretSet) Empty() bool { return len(s.added) == 0 && len(s.written) == 0 }

// key identifies the set for the cache. It hashes what was added, in
// order, length-prefixed and tagged, so no two different sets share a
// key; the hash keeps no copy of a secret in the cache's keys.
func (s *SecretSet) key() [sha256.Size]byte {
	h := sha256.New()
	var n [9]byte
	part := func(tag byte, v string) {
		n[0] = tag
		binary.BigEndian.PutUint64(n[1:], uint64(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	for _, a := range s.added {
		part('s', a.secret)
		part('p', a.standIn)
	}
	for _, w := range s.written {
		part('w', w)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

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

// maxCachedRedactors bounds the cache; past it, it starts over.
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
	h := sha256.New()
	var n [8]byte
	for _, p := range pats {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
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
