package scrub

import (
	"cmp"
	"io"
	"net/http"
	"slices"
	"sync"
	"unsafe"
)

// Redactor replaces secrets with stand-ins in text the agent will see. It
// is immutable and safe for concurrent use; a nil *Redactor redacts
// nothing.
//
// Each pattern (a form of a secret: see [SecretSet]) is searched
// case-insensitively, with '+' and ' ' the same byte, in two views of
// the text: the bytes as sent, and the bytes with one level of URL,
// JSON/JS and HTML escapes decoded (see decode.go), so that an echo in
// any mix of those escapings is found. A match in the decoding view
// stands for the input that produced it, and every match is widened to
// whole escape sequences. The output is the text with the union of all
// matches replaced: overlapping matches merge into one span, replaced by
// the stand-in of its leftmost match (the longest of those, then the
// longer pattern). Text outside the spans is unchanged.
//
// The output never contains a pattern in either view. A stand-in that
// holds an escape starter (% \ &), contains a pattern or lies inside
// one is never used; an occurrence of a stand-in that would spell a
// pattern together with its actual neighbours (for example pattern
// "tokena" and stand-in "agvph_..." after the text "token"), or
// complete an escape begun just before it ("%4" then "agvph_..."), gets
// a mask such as "********" that shares no byte with any pattern (see
// standin.go). So does a run of overlapping matches longer than
// maxEscape bytes per byte of the longest pattern when its stand-in
// would have to wait for the text after the run.
type Redactor struct {
	m    *matcher // nil: no patterns
	repl []string // per pattern
	mask string   // "" only if no safe mask exists (see maskFor)
	// Per pattern: whether some pattern could overlap its stand-in on
	// the left or right, so occurrences must look at their neighbours.
	leftRisk, rightRisk []bool
	// ctxLen is how much output before a stand-in its checks need: a
	// pattern overlapping it starts at most longest-1 view bytes
	// before it, and a decoded byte takes at most maxEscape input
	// bytes; without a left risk, only an escape's length.
	ctxLen int
	// spanLimit is the longest merged span whose stand-in may wait for
	// its right neighbour (longer ones get the mask): a single match
	// spans at most maxEscape input bytes per pattern byte.
	spanLimit int
}

// newRedactor builds a Redactor from pattern -> stand-in (usually a
// secret's placeholder), with the matcher for its ranked, folded
// patterns made by newM (a Cache shares matchers between redactors that
// differ only in their stand-ins: every session has its own
// placeholders for the same secrets). Empty patterns are ignored.
// Patterns equal under folding are one pattern, with the stand-in of
// the byte-wise smallest of them.
func newRedactor(secrets map[string]string, newM func(pats []string) *matcher) *Redactor {
	type entry struct{ folded, orig, repl string }
	byFold := make(map[string]entry, len(secrets))
	for v, repl := range secrets {
		if v == "" {
			continue
		}
		f := fold(v)
		if old, ok := byFold[f]; !ok || v < old.orig {
			byFold[f] = entry{f, v, repl}
		}
	}
	r := &Redactor{}
	if len(byFold) == 0 {
		return r
	}
	entries := make([]entry, 0, len(byFold))
	for _, e := range byFold {
		entries = append(entries, e)
	}
	// Rank: longer first, so of two matches with the same extent the
	// longer pattern's stand-in is used; then byte order, to be
	// deterministic.
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(len(b.folded)-len(a.folded), cmp.Compare(a.folded, b.folded))
	})
	pats := make([]string, len(entries))
	r.repl = make([]string, len(entries))
	for i, e := range entries {
		pats[i], r.repl[i] = e.folded, e.repl
	}
	r.m = newM(pats)
	r.mask = maskFor(pats)
	r.leftRisk, r.rightRisk = make([]bool, len(pats)), make([]bool, len(pats))
	r.ctxLen = maxEscape - 1 // for straddles
	r.spanLimit = maxEscape * r.m.longest
	type risk struct{ usable, left, right bool }
	risks := map[string]risk{} // per distinct stand-in: a set has few
	for i, s := range r.repl {
		rk, ok := risks[s]
		if !ok {
			if rk.usable = usableStandIn(s, pats); rk.usable {
				rk.left, rk.right = overlapRisk(fold(s), pats)
			}
			risks[s] = rk
		}
		if !rk.usable && r.mask != "" {
			r.repl[i] = r.mask
			continue
		}
		r.leftRisk[i], r.rightRisk[i] = rk.left, rk.right
		if rk.left {
			r.ctxLen = maxEscape * r.m.longest
		}
	}
	return r
}

// bytesOf is a read-only view of s; the scan never writes its input.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// scratches recycles pass memory: the escape records and decoding view
// of a window would otherwise be allocated per call.
var scratches = sync.Pool{New: func() any { return new(scratch) }}

// scanWindow is how much of a string one pass looks at: passes over
// windows bound the memory of a long string's views, like a Reader's.
const scanWindow = redactMaxRead

// String returns s with every match replaced. It does not allocate when
// there is none.
func (r *Redactor) String(s string) string {
	if r == nil || r.m == nil {
		return s
	}
	sc := scratches.Get().(*scratch)
	defer scratches.Put(sc)
	// The output is only built once a stand-in is written: until then it
	// is s[:cur.kept].
	cur := cursor{lazy: true, src: s, before: sc.before[:0]}
	var out []byte
	// One window at a time, as a stream of s would be redacted.
	in := bytesOf(s)
	for base, size := 0, scanWindow; ; {
		end := min(len(in), base+size)
		b, final := in[base:end], end == len(in)
		var done int
		out, done = r.emit(b, r.analyze(b, final, sc), final, sc, &cur, out)
		if final {
			break
		}
		if done == 0 {
			size *= 2 // all of it held back: look further
		}
		base += done
	}
	sc.before = cur.before
	if cur.lazy {
		return s
	}
	return string(out)
}

// contains reports whether s holds a match in either view.
func (r *Redactor) contains(s string) bool {
	if r == nil || r.m == nil {
		return false
	}
	sc := scratches.Get().(*scratch)
	defer scratches.Put(sc)
	// The windows of String, without the output: a window's matches are
	// final, and it goes on from where a match may still be completed.
	in := bytesOf(s)
	for base, size := 0, scanWindow; ; {
		end := min(len(in), base+size)
		h := r.analyze(in[base:end], end == len(in), sc)
		switch {
		case len(sc.spans) > 0:
			return true
		case end == len(in):
			return false
		case h == 0:
			size *= 2
		}
		base += h
	}
}

// Header redacts all header values in place, and drops every header
// whose name contains a match: a name cannot carry a stand-in (the
// result might not be a valid name, or might collide with another).
func (r *Redactor) Header(h http.Header) {
	if r == nil || r.m == nil {
		return
	}
	for name, values := range h {
		if r.contains(name) {
			delete(h, name)
			continue
		}
		for i, v := range values {
			values[i] = r.String(v)
		}
	}
}

// Reader returns a reader that yields src redacted as String would. It
// holds back only the shortest tail that could still become a match (a
// partial match at the end of either view, an escape not yet complete),
// so streams such as Server-Sent Events are not delayed when no secret is
// in progress. A match's stand-in is written as soon as it is decided,
// and text its span goes on to cover is swallowed; a stand-in that some
// pattern could overlap on its right waits until the text after it
// rules that out (usually its first byte). At io.EOF the
// held-back bytes are returned before it; on any other error of src they
// are dropped (they could be the start of a secret). The error is then
// returned on every call.
func (r *Redactor) Reader(src io.Reader) io.Reader {
	if r == nil || r.m == nil {
		return src
	}
	return &redactReader{r: r, src: src}
}

// redactReader streams src through one pass per read.
type redactReader struct {
	r   *Redactor
	src io.Reader
	buf []byte // the held-back tail, then new data
	cur cursor
	sc  *scratch // from scratches until the last pass
	out []byte   // decided output not yet returned
	off int      // out[:off] has been returned
	err error    // sticky error from src, returned once out is drained
	// size is the next read's size: it starts small and doubles while
	// reads fill it, so a short API response does not pay for a large
	// buffer (that allocation dominated the proxy's CPU profile).
	size int
}

const (
	redactMinRead = 2 << 10
	redactMaxRead = 32 << 10
)

func (rr *redactReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for empty := 0; ; {
		if rr.off < len(rr.out) {
			n := copy(p, rr.out[rr.off:])
			rr.off += n
			return n, nil
		}
		if rr.err != nil {
			return 0, rr.err
		}
		rr.out, rr.off = rr.out[:0], 0

		from := len(rr.buf)
		if rr.size == 0 {
			rr.size = redactMinRead
		}
		if cap(rr.buf)-from < rr.size {
			rr.buf = slices.Grow(rr.buf, rr.size)
		}
		n, err := rr.src.Read(rr.buf[from : from+rr.size])
		if n == rr.size && rr.size < redactMaxRead {
			rr.size *= 2
		}
		rr.buf = rr.buf[:from+n]
		if err != nil {
			rr.err = err
		}
		// At EOF the held-back tail is released; on any other error it
		// is dropped: it may be the start of a secret the stream broke
		// off in, and the reader ends in an error anyway.
		if n > 0 || err != nil {
			if rr.sc == nil {
				rr.sc = scratches.Get().(*scratch)
			}
			final := err == io.EOF
			h := rr.r.analyze(rr.buf, final, rr.sc)
			var done int
			rr.out, done = rr.r.emit(rr.buf, h, final, rr.sc, &rr.cur, rr.out)
			rr.buf = rr.buf[:copy(rr.buf, rr.buf[done:])]
			if err != nil { // the last pass
				scratches.Put(rr.sc)
				rr.sc, rr.buf = nil, nil
			}
		}
		if n == 0 && err == nil {
			if empty++; empty >= 100 {
				return 0, io.ErrNoProgress
			}
		}
	}
}
