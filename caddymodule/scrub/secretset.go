package scrub

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
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
// The raw value's stand-in is that of the last pair added for it; an
// encoding already registered keeps its stand-in. A value with spaces
// or tabs at either end is also registered trimmed, because that is how
// HTTP sends it in a header (Go's transport trims header values).
//
// A (secret, standIn) pair the set already holds is ignored, so a
// credential registered twice (sent, and in the session's scope) does
// not make the set, and its cache entry, differ from one where it was
// registered once. The order of different pairs still counts.
func (s *SecretSet) Add(secret, standIn string) {
	a := addedSecret{secret, standIn}
	if secret != "" && !slices.Contains(s.added, a) {
		s.added = append(s.added, a)
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

// key identifies the set for the cache: what was added, in order.
func (s *SecretSet) key() [sha256.Size]byte {
	var buf [1 << 10]byte // enough for most sets: no allocation
	b := buf[:0]
	for _, a := range s.added {
		b = appendPart(appendPart(b, 's', a.secret), 'p', a.standIn)
	}
	for _, w := range s.written {
		b = appendPart(b, 'w', w)
	}
	return sha256.Sum256(b)
}

// appendPart appends a part of a cache key to b: its tag, its length
// and its bytes, so that no two different sequences of parts make the
// same key. The cache keys by their SHA-256, which keeps no copy of a
// secret.
func appendPart(b []byte, tag byte, v string) []byte {
	b = append(b, tag)
	b = binary.BigEndian.AppendUint64(b, uint64(len(v)))
	return append(b, v...)
}
