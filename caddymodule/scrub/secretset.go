package scrub

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"net/textproto"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Redacted stands in for a secret form that has no placeholder of its
// own (an encoded Basic header, a credential the session holds no
// placeholder for).
const Redacted = "[agent-vault:redacted]"

// SecretSet is every form of every secret one request sent upstream,
// each with the stand-in the agent sees instead: the raw values and the
// encodings an upstream may echo them in (added here), and the exact
// strings the request writers report (AddWritten). The redactor of the
// answer is built from it and nothing else. The zero value is empty and
// ready to use; a SecretSet is not safe for concurrent use.
type SecretSet struct {
	forms map[string]string // form -> stand-in
}

// Add registers a secret value and the encodings an upstream commonly
// echoes it in (URL path and query escaping, JSON string escaping with
// and without HTML-safe escapes), all to be replaced by standIn: the
// agent's placeholder for it, or Redacted. The raw value's stand-in is
// always standIn; an encoding already registered keeps its stand-in.
// A value with spaces or tabs at either end is also registered trimmed,
// because that is how HTTP sends it in a header (Go's transport trims
// header values).
func (s *SecretSet) Add(secret, standIn string) {
	if secret == "" {
		return
	}
	if s.forms == nil {
		s.forms = make(map[string]string)
	}
	s.forms[secret] = standIn
	s.addEncodings(secret, standIn)
	if trimmed := textproto.TrimString(secret); trimmed != secret && trimmed != "" {
		if _, known := s.forms[trimmed]; !known {
			s.forms[trimmed] = standIn
		}
		s.addEncodings(trimmed, standIn)
	}
}

func (s *SecretSet) addEncodings(secret, standIn string) {
	for _, form := range [...]string{url.PathEscape(secret), url.QueryEscape(secret), jsonEscape(secret, false), jsonEscape(secret, true)} {
		if _, known := s.forms[form]; !known {
			s.forms[form] = standIn
		}
	}
}

// AddWritten registers bytes the proxy itself wrote that embed a secret
// (an encoded Basic header, an escaped query value): exactly what went
// on the wire, as the writer (services.Inject, services.RewriteRequest)
// reports it. They are replaced by Redacted unless Add registered the
// same string with a stand-in of its own.
func (s *SecretSet) AddWritten(forms ...string) {
	for _, form := range forms {
		if form == "" {
			continue
		}
		if s.forms == nil {
			s.forms = make(map[string]string)
		}
		if _, known := s.forms[form]; !known {
			s.forms[form] = Redacted
		}
	}
}

// Empty reports whether no secret was registered.
func (s *SecretSet) Empty() bool { return len(s.forms) == 0 }

// jsonEscape is v as it appears inside a JSON string, with or without
// HTML-safe escaping of <, > and &.
func jsonEscape(v string, html bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(html)
	enc.Encode(v) //nolint:errcheck // a string always encodes
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// Cache keeps built redactors: building one checks every stand-in
// against every secret, which showed up as a sixth of the proxy's CPU
// when done per request, and the same few secret sets recur. The zero
// value is ready; it is safe for concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*Redactor
}

// maxCachedRedactors bounds the cache; past it, it starts over.
const maxCachedRedactors = 1024

// Redactor returns the redactor for s, or nil when s is empty.
func (c *Cache) Redactor(s *SecretSet) *Redactor {
	if s.Empty() {
		return nil
	}
	keys := make([]string, 0, len(s.forms))
	for k := range s.forms {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	var n [8]byte
	for _, k := range keys {
		for _, part := range [2]string{k, s.forms[k]} {
			// Length-prefixed, so that no two sets share an encoding.
			binary.BigEndian.PutUint64(n[:], uint64(len(part)))
			h.Write(n[:])
			h.Write([]byte(part))
		}
	}
	// The key holds secrets, so it is hashed: the cache keeps no copy
	// of a value beyond what the redactor itself needs.
	var key [sha256.Size]byte
	h.Sum(key[:0])
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.m[key]; ok {
		return r
	}
	if c.m == nil || len(c.m) >= maxCachedRedactors {
		c.m = make(map[[sha256.Size]byte]*Redactor)
	}
	r := NewRedactor(s.forms)
	c.m[key] = r
	return r
}
