package scrub

import (
	"slices"
	"strings"
)

// What replaces a match. The output never contains a pattern in either
// view, by these rules:
//
//   - Spans start and end on unit boundaries of the input's parse, so
//     the kept text between replacements parses as it did in the input,
//     where neither view held a pattern outside the spans.
//   - A stand-in holds no escape starter (so it reads the same in both
//     views), and, folded, neither contains nor is contained in a
//     pattern; otherwise it is never used.
//   - Each occurrence of a stand-in is checked against its actual
//     neighbours in the output: if an escape begun in the kept text
//     before it would run into it ("%4" and then "agvph_..." reads as
//     "J" and "gvph_..." in the decoding view), or a pattern would
//     overlap it at either end in either view (pattern "...xa" after
//     text "...x"), that occurrence gets the mask instead.
//
// Checking each occurrence rather than every conceivable neighbour
// matters: with the base64 and hex forms of ten secrets, some pattern
// nearly always ends in "a" or starts with "f", and a placeholder
// ("agvph_...f") would almost never survive.
//
// The mask is a run of one byte that is no starter, cannot continue an
// escape, and cannot combine with any pattern (it shares no byte with
// them, or none starts or ends with its byte and it is longer than all).

// continuesEscape reports the bytes that can follow some proper prefix
// of an escape: hex and decimal digits, the letters of \u \U \x %u, the
// JSON escapes and entity names, and " ' \ / # ; { }.
func continuesEscape(c byte) bool {
	return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' ||
		c == '"' || c == '\'' || c == '\\' || c == '/' || c == '#' || c == ';' || c == '{' || c == '}'
}

// usableStandIn reports whether s may replace matches of the folded
// patterns pats at all (each occurrence is checked again in context).
func usableStandIn(s string, pats []string) bool {
	if s == "" || strings.ContainsAny(s, `%\&`) {
		return false // empty: the text on both sides would join up
	}
	// A short stand-in that an escape could run into might be read
	// through into the kept text after it; rule it out (placeholders
	// are long, Redacted starts with '[').
	if len(s) < maxEscape && continuesEscape(s[0]) {
		return false
	}
	fs := fold(s)
	return !slices.ContainsFunc(pats, func(p string) bool { return strings.Contains(fs, p) || strings.Contains(p, fs) })
}

// overlapRisk reports whether some pattern could overlap the folded
// stand-in fs on its left (a suffix of the pattern is a prefix of fs)
// or on its right: only then do its occurrences need a look at their
// neighbours.
func overlapRisk(fs string, pats []string) (left, right bool) {
	for _, p := range pats {
		left = left || overlaps(p, fs)
		right = right || overlaps(fs, p)
	}
	return left, right
}

// overlaps reports whether a non-empty suffix of a is a prefix of b.
func overlaps(a, b string) bool {
	for k := 1; k <= len(a) && k <= len(b); k++ {
		if a[len(a)-k] == b[0] && a[len(a)-k:] == b[:k] {
			return true
		}
	}
	return false
}

// maskFor returns a run of one byte that cannot combine with any of the
// folded patterns and reads the same in both views: preferably a byte
// no pattern contains, else one no pattern starts or ends with,
// repeated beyond the longest pattern. It returns "" only if every
// candidate byte starts or ends some pattern (100+ patterns).
func maskFor(pats []string) string {
	candidates := []byte("*~!|^")
	for c := 0; c < 256; c++ {
		if b := byte(c); !isStarter(b) && !continuesEscape(b) && foldTab[b] == b && !slices.Contains(candidates, b) {
			candidates = append(candidates, b)
		}
	}
	for _, c := range candidates {
		if !slices.ContainsFunc(pats, func(p string) bool { return strings.IndexByte(p, c) >= 0 }) {
			return strings.Repeat(string([]byte{c}), 8)
		}
	}
	longest := 0
	for _, p := range pats {
		longest = max(longest, len(p))
	}
	for _, c := range candidates {
		if !slices.ContainsFunc(pats, func(p string) bool { return p[0] == c || p[len(p)-1] == c }) {
			return strings.Repeat(string([]byte{c}), longest+1)
		}
	}
	return ""
}

// straddles reports whether an escape starting in the output before a
// stand-in s (its last maxEscape-1 bytes are enough) would run into s.
// Only a unit that before leaves undecided can; s, when it matters, is
// at least maxEscape bytes (usableStandIn), enough to decide it.
func straddles(before []byte, s string) bool {
	if s == "" || !continuesEscape(s[0]) {
		return false
	}
	before = before[max(0, len(before)-(maxEscape-1)):]
	var buf [2 * maxEscape]byte
	var dec [4]byte
	for i := range before {
		if _, _, more := parseEscape(before[i:], false, &dec); !more {
			continue
		}
		b := append(append(buf[:0], before[i:]...), s[:min(len(s), maxEscape)]...)
		if n, _, _ := parseEscape(b, true, &dec); n > len(before)-i {
			return true
		}
	}
	return false
}

// overlapsIn reports whether a pattern occurs in either view of w
// overlapping w[lo:hi], a stand-in (literal in both views) that starts
// on a unit boundary of w's parse.
func (r *Redactor) overlapsIn(w []byte, lo, hi int, sc *scratch) bool {
	if r.occursOver(w, lo, hi, sc) {
		return true
	}
	v := &sc.ctx
	dec := v.of(w)
	if len(v.esc) == 0 {
		return false
	}
	if r.occursOver(dec, v.outPos(lo), v.outPos(hi), sc) {
		return true
	}
	sc.ctxSpans = r.m.edgeSpans(w, v, sc.ctxSpans[:0])
	for _, sp := range sc.ctxSpans {
		if sp.start < hi && sp.end > lo {
			return true
		}
	}
	return false
}

// occursOver reports whether a pattern occurs in b overlapping b[lo:hi].
func (r *Redactor) occursOver(b []byte, lo, hi int, sc *scratch) bool {
	mt := r.m
	sc.hits = mt.find(b, sc.hits[:0])
	for _, m := range sc.hits {
		if m.start < hi && m.start+len(mt.pats[m.pat]) > lo {
			return true
		}
	}
	return false
}

// partialFrom reports whether a partial match at the end of either view
// of w (more input may complete it) starts before hi, the end of a
// stand-in at the start of w.
func (r *Redactor) partialFrom(w []byte, hi int, sc *scratch) bool {
	if r.m.partial(w) < hi {
		return true
	}
	v := &sc.ctx
	dec := v.of(w)
	if len(v.esc) == 0 {
		return false
	}
	if r.m.partial(dec) < v.outPos(hi) {
		return true
	}
	return r.m.edgePartial(w, v) < hi
}
