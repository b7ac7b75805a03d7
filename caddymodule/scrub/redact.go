package scrub

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
)

// Redactor replaces secrets with stand-ins in text the agent will see. It
// is immutable and safe for concurrent use; a nil *Redactor redacts
// nothing.
//
// At each position the longest matching secret is replaced, scanning left
// to right (like strings.ReplaceAll with several secrets). The output
// never contains a secret: a replacement that could spell one together
// with its neighbours (for example secret "tokena" and replacement
// "agvph_..." after the text "token") is swapped for a mask such as
// "********" that shares no characters with any secret.
type Redactor struct {
	secrets []redactSecret // longest first
}

type redactSecret struct {
	value  string
	repl   string
	border []int // KMP: border[i] is the longest proper border of value[:i+1]
}

// NewRedactor builds a Redactor from secret value -> replacement
// (usually the secret's placeholder). Empty secrets are ignored.
func NewRedactor(secrets map[string]string) *Redactor {
	r := &Redactor{}
	for v, repl := range secrets {
		if v != "" {
			r.secrets = append(r.secrets, redactSecret{value: v, repl: repl, border: borders(v)})
		}
	}
	slices.SortFunc(r.secrets, func(a, b redactSecret) int {
		if len(a.value) != len(b.value) {
			return len(b.value) - len(a.value)
		}
		return strings.Compare(a.value, b.value)
	})
	values := make([]string, len(r.secrets))
	for i, s := range r.secrets {
		values[i] = s.value
	}
	var mask string
	for i := range r.secrets {
		if !safeReplacement(r.secrets[i].repl, values) {
			if mask == "" {
				mask = maskFor(values)
			}
			if mask != "" {
				r.secrets[i].repl = mask
			}
		}
	}
	return r
}

// borders computes the KMP failure function of s.
func borders(s string) []int {
	b := make([]int, len(s))
	k := 0
	for i := 1; i < len(s); i++ {
		for k > 0 && s[i] != s[k] {
			k = b[k-1]
		}
		if s[i] == s[k] {
			k++
		}
		b[i] = k
	}
	return b
}

// safeReplacement reports whether repl can never form a secret together
// with surrounding output: it must not contain or be contained in a
// secret, nor overlap one at either end. Text between replacements never
// contains a whole secret (it would have been replaced), so these are
// the only ways a secret could reappear.
func safeReplacement(repl string, secrets []string) bool {
	if repl == "" {
		return false // the text on both sides would join up
	}
	for _, s := range secrets {
		if strings.Contains(repl, s) || strings.Contains(s, repl) || overlaps(repl, s) || overlaps(s, repl) {
			return false
		}
	}
	return true
}

// overlaps reports whether a non-empty suffix of a is a prefix of b.
func overlaps(a, b string) bool {
	for k := 1; k <= len(a) && k <= len(b); k++ {
		if a[len(a)-k:] == b[:k] {
			return true
		}
	}
	return false
}

// maskFor returns a run of one byte that cannot combine with any secret:
// preferably a byte no secret contains, else one no secret starts or
// ends with, repeated beyond the longest secret. It returns "" only if
// every byte value starts or ends some secret (128+ secrets).
func maskFor(secrets []string) string {
	candidates := "*#~x"
	for c := 0; c < 256; c++ {
		candidates += string([]byte{byte(c)})
	}
	for i := 0; i < len(candidates); i++ {
		c := candidates[i : i+1]
		if !slices.ContainsFunc(secrets, func(s string) bool { return strings.Contains(s, c) }) {
			return strings.Repeat(c, 8)
		}
	}
	longest := 0
	for _, s := range secrets {
		longest = max(longest, len(s))
	}
	for i := 0; i < len(candidates); i++ {
		c := candidates[i]
		if !slices.ContainsFunc(secrets, func(s string) bool { return s[0] == c || s[len(s)-1] == c }) {
			return strings.Repeat(candidates[i:i+1], longest+1)
		}
	}
	return ""
}

// String returns s with every secret replaced.
func (r *Redactor) String(s string) string {
	if r == nil || !slices.ContainsFunc(r.secrets, func(sec redactSecret) bool { return strings.Contains(s, sec.value) }) {
		return s
	}
	st := r.newState()
	st.buf = append(st.buf, s...)
	return string(st.advance(0, true, make([]byte, 0, len(s))))
}

// Header redacts all header values, and names, in place.
func (r *Redactor) Header(h http.Header) {
	if r == nil {
		return
	}
	var renames []string
	for name, values := range h {
		for i, v := range values {
			values[i] = r.String(v)
		}
		if r.String(name) != name {
			renames = append(renames, name)
		}
	}
	for _, name := range renames {
		values := h[name]
		delete(h, name)
		redacted := r.String(name)
		h[redacted] = append(h[redacted], values...)
	}
}

// Reader returns a reader that yields src with every secret replaced. It
// holds back only the shortest tail that could still become a secret,
// so streams such as Server-Sent Events are not delayed when no secret is
// in progress. At io.EOF the held-back bytes are returned before it; on
// any other error of src they are dropped (they could be the start of a
// secret). The error is then returned on every call.
func (r *Redactor) Reader(src io.Reader) io.Reader {
	if r == nil || len(r.secrets) == 0 {
		return src
	}
	return &redactReader{src: src, st: r.newState()}
}

// redactState is the incremental matcher shared by String and Reader.
type redactState struct {
	r   *Redactor
	buf []byte  // input not yet decided: the held-back tail, then new data
	q   []int   // per secret: KMP state, the length of the partial match at the end of buf
	occ [][]int // per secret: start offsets in buf of complete occurrences, ascending
}

func (r *Redactor) newState() *redactState {
	return &redactState{r: r, q: make([]int, len(r.secrets)), occ: make([][]int, len(r.secrets))}
}

// advance scans buf[from:] (new input), appends to out everything that
// can be decided and keeps the rest in buf. With final, nothing more will
// come, so partial matches are just text.
func (st *redactState) advance(from int, final bool, out []byte) []byte {
	hold := 0
	for j := range st.r.secrets {
		st.q[j], st.occ[j] = st.r.secrets[j].scan(st.buf, from, st.q[j], st.occ[j])
		hold = max(hold, st.q[j])
	}
	if final {
		hold = 0
	}
	// Any occurrence starting before limit is complete: one still in
	// progress would be a partial match longer than hold.
	limit := len(st.buf) - hold
	i := 0
	for i < limit {
		next, best := -1, -1
		for j := range st.occ {
			o := st.occ[j]
			for len(o) > 0 && o[0] < i {
				o = o[1:]
			}
			st.occ[j] = o
			// Secrets are sorted longest first, so strict < keeps the
			// longest of several starting at the same offset.
			if len(o) > 0 && (next < 0 || o[0] < next) {
				next, best = o[0], j
			}
		}
		if next < 0 || next >= limit {
			out = append(out, st.buf[i:limit]...)
			i = limit
			break
		}
		out = append(out, st.buf[i:next]...)
		out = append(out, st.r.secrets[best].repl...)
		i = next + len(st.r.secrets[best].value)
	}
	// Drop the decided prefix; a match may have run past limit.
	st.buf = st.buf[:copy(st.buf, st.buf[i:])]
	for j, o := range st.occ {
		for k := range o {
			o[k] -= i // negative offsets fell inside a replacement; skipped later
		}
		st.occ[j] = o
	}
	return out
}

// scan runs KMP over buf[from:], starting in state q, and appends the
// start of each complete occurrence (overlapping ones included) to occ.
// While no partial match is open it skips ahead with IndexByte.
func (s *redactSecret) scan(buf []byte, from, q int, occ []int) (int, []int) {
	v := s.value
	for i := from; i < len(buf); i++ {
		if q == 0 {
			k := bytes.IndexByte(buf[i:], v[0])
			if k < 0 {
				return 0, occ
			}
			i += k
		}
		c := buf[i]
		for q > 0 && v[q] != c {
			q = s.border[q-1]
		}
		if v[q] == c {
			q++
		}
		if q == len(v) {
			occ = append(occ, i+1-len(v))
			q = s.border[q-1]
		}
	}
	return q, occ
}

// redactReader streams src through a redactState.
type redactReader struct {
	src io.Reader
	st  *redactState
	out []byte // decided output not yet returned
	off int    // out[:off] has been returned
	err error  // sticky error from src, returned once out is drained
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

		st := rr.st
		from := len(st.buf)
		if rr.size == 0 {
			rr.size = redactMinRead
		}
		if cap(st.buf)-from < rr.size {
			st.buf = slices.Grow(st.buf, rr.size)
		}
		n, err := rr.src.Read(st.buf[from : from+rr.size])
		if n == rr.size && rr.size < redactMaxRead {
			rr.size *= 2
		}
		st.buf = st.buf[:from+n]
		if err != nil {
			rr.err = err
		}
		// At EOF the held-back tail is released; on any other error it
		// is dropped: it may be the start of a secret the stream broke
		// off in, and the reader ends in an error anyway.
		rr.out = st.advance(from, err == io.EOF, rr.out)
		if n == 0 && err == nil {
			if empty++; empty >= 100 {
				return 0, io.ErrNoProgress
			}
		}
	}
}
