package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The activity log stores its entries in chunks (see activity.go): up
// to maxChunkEntries entries of one batch, sorted by (At, ID), encoded
// into one value. The encoding, version 1:
//
//	byte    version (1)
//	uvarint strings in the table; each: uvarint length, bytes
//	uvarint entries (1..maxChunkEntries)
//	varint  the first entry's At (unix nanoseconds)
//	each entry:
//	  byte    ID form: 0 any string (uvarint length, bytes), 1 an
//	          activity.NewID ("act_" and 32 lower-case hex digits) as
//	          its 16 bytes
//	  uvarint At minus the previous entry's (none for the first)
//	  uvarint the length of the rest of the entry:
//	  uvarint table index of Instance, Session, Agent, Service,
//	          Method, Host, Path, Decision, Code, Reason, Client
//	  varint  Port, Status, BytesIn, BytesOut, Duration (nanoseconds)
//	  uvarint credentials; each a uvarint table index
//
// Every string but the ID goes through the table: a batch repeats its
// session, agent, service, host and most else from entry to entry, so
// a chunk stores each once. The length lets a filtered read skip the
// entries its key rows' bits exclude. Nothing follows the last entry.
//
// The decoder is strict: it never panics, refuses any malformed input
// with an error (a length or count beyond what is left, an index past
// the table, an unknown version or ID form, entries out of order,
// trailing bytes) and allocates in proportion to its input. The rest
// of an entry that a read skips is not checked (a read of every entry
// checks all).
const (
	activityCodecVersion = 1
	idFormString         = 0
	idFormActivity       = 1
)

// activityIDPrefix starts an activity.NewID; 32 hex digits follow.
const activityIDPrefix = "act_"

// chunkStrings is how many of an entry's fields are table indexes.
const chunkStrings = 11

// errChunk is a chunk that does not decode (a corrupt database value).
var errChunk = errors.New("a corrupt activity chunk")

// chunkEncoder encodes chunks; its buffers are reused from one chunk
// to the next (one per batch).
type chunkEncoder struct {
	table map[string]uint64
	order []string
	body  []byte
	rest  []byte // an entry's after its length
	last  [chunkStrings]struct {
		s   string
		ref uint64
	}
}

// encode returns rows (sorted by (At, ID), 1..maxChunkEntries of them,
// each At storable) as a chunk's value, a new slice.
func (e *chunkEncoder) encode(rows []*ActivityRow) []byte {
	if e.table == nil {
		e.table = make(map[string]uint64, 32)
	}
	clear(e.table)
	e.order, e.body = e.order[:0], e.body[:0]
	for i := range e.last {
		e.last[i].s, e.last[i].ref = "", e.intern("")
	}
	prev := rows[0].At.UnixNano()
	for i := range rows {
		r := rows[i]
		if id, ok := activityIDBytes(r.ID); ok {
			e.body = append(e.body, idFormActivity)
			e.body = append(e.body, id[:]...)
		} else {
			e.body = append(e.body, idFormString)
			e.body = binary.AppendUvarint(e.body, uint64(len(r.ID)))
			e.body = append(e.body, r.ID...)
		}
		at := r.At.UnixNano()
		if i > 0 {
			e.body = binary.AppendUvarint(e.body, uint64(at-prev))
		}
		prev = at
		rest := e.rest[:0]
		for f, s := range [chunkStrings]string{r.Instance, r.Session, r.Agent, r.Service, r.Method, r.Host, r.Path,
			r.Decision, r.Code, r.Reason, r.Client} {
			// Most fields repeat the previous entry's: no map lookup.
			if l := &e.last[f]; s != l.s {
				l.s, l.ref = s, e.intern(s)
			}
			rest = binary.AppendUvarint(rest, e.last[f].ref)
		}
		for _, n := range [...]int64{int64(r.Port), int64(r.Status), r.BytesIn, r.BytesOut, int64(r.Duration)} {
			rest = binary.AppendVarint(rest, n)
		}
		rest = binary.AppendUvarint(rest, uint64(len(r.Credentials)))
		for _, c := range r.Credentials {
			rest = binary.AppendUvarint(rest, e.intern(c))
		}
		e.body = binary.AppendUvarint(e.body, uint64(len(rest)))
		e.body = append(e.body, rest...)
		e.rest = rest
	}
	size := 1 + binary.MaxVarintLen64*3 + len(e.body)
	for _, s := range e.order {
		size += binary.MaxVarintLen64 + len(s)
	}
	out := make([]byte, 0, size)
	out = append(out, activityCodecVersion)
	out = binary.AppendUvarint(out, uint64(len(e.order)))
	for _, s := range e.order {
		out = binary.AppendUvarint(out, uint64(len(s)))
		out = append(out, s...)
	}
	out = binary.AppendUvarint(out, uint64(len(rows)))
	out = binary.AppendVarint(out, rows[0].At.UnixNano())
	return append(out, e.body...)
}

// intern returns s's index in the table, adding it if new.
func (e *chunkEncoder) intern(s string) uint64 {
	if ref, ok := e.table[s]; ok {
		return ref
	}
	ref := uint64(len(e.order))
	e.table[s] = ref
	e.order = append(e.order, s)
	return ref
}

// appendActivityID appends the ID whose 16 bytes are raw.
func appendActivityID(dst, raw []byte) []byte {
	const digits = "0123456789abcdef"
	dst = append(dst, activityIDPrefix...)
	for _, c := range raw {
		dst = append(dst, digits[c>>4], digits[c&0xf])
	}
	return dst
}

// activityIDBytes returns the 16 bytes of an activity.NewID, ok false
// for any other string (upper-case digits included: they would not
// decode to the same string). Generic so that a decode checks its
// bytes without a copy.
func activityIDBytes[T string | []byte](id T) (b [16]byte, ok bool) {
	if len(id) != len(activityIDPrefix)+32 || string(id[:len(activityIDPrefix)]) != activityIDPrefix {
		return b, false
	}
	for i := range b {
		hi, ok1 := hexDigit(id[len(activityIDPrefix)+2*i])
		lo, ok2 := hexDigit(id[len(activityIDPrefix)+2*i+1])
		if !ok1 || !ok2 {
			return b, false
		}
		b[i] = hi<<4 | lo
	}
	return b, true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// chunkMatch selects the entries a decode returns; nil returns all.
// It sees the entry's filterable fields only (see entryFields).
type chunkMatch func(*entryFields) bool

// entryFields are an entry's filterable fields as a decode sees them
// before it builds the row.
type entryFields struct {
	At                                            int64
	Session, Agent, Service, Host, Decision, Code string
	Status                                        int
}

// chunkReader reads a chunk's bytes; every read checks what is left.
type chunkReader struct {
	b   []byte
	err error
}

func (r *chunkReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errChunk, what)
	}
}

func (r *chunkReader) byte(what string) byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail(what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// uvarint reads a uvarint; one of a byte (most are) without a call.
func (r *chunkReader) uvarint(what string) uint64 {
	if b := r.b; r.err == nil && len(b) > 0 && b[0] < 0x80 {
		r.b = b[1:]
		return uint64(b[0])
	}
	return r.longUvarint(what)
}

func (r *chunkReader) longUvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// varint reads a varint: a zig-zag encoded uvarint, as binary.Varint.
func (r *chunkReader) varint(what string) int64 {
	u := r.uvarint(what)
	return int64(u>>1) ^ -int64(u&1)
}

// count reads a count or a length, at most max: each thing counted
// takes at least a byte of what follows, so a count beyond the bytes
// left is malformed (and nothing allocates past the input's size).
func (r *chunkReader) count(what string, max uint64) int {
	n := r.uvarint(what)
	if r.err == nil && (n > uint64(len(r.b)) || n > max) {
		r.fail(what)
		return 0
	}
	return int(n)
}

func (r *chunkReader) bytes(n int, what string) []byte {
	if r.err != nil || n > len(r.b) {
		r.fail(what)
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

// int reads a varint that must fit an int.
func (r *chunkReader) int(what string) int {
	v := r.varint(what)
	if v < math.MinInt || v > math.MaxInt {
		r.fail(what)
		return 0
	}
	return int(v)
}

// chunkSummary is what a decode tells of the whole chunk, to check
// against its row's columns.
type chunkSummary struct {
	entries     int
	first, last int64 // unix nanoseconds
}

// allEntries is the want of a decode that reads every entry.
const allEntries = ^uint64(0)

// decodeChunk returns the entries of a chunk's value whose bit is set
// in want (bit i: entry i) and that match selects (nil: all), in the
// chunk's order, and the chunk's summary; an error for any malformed
// value.
func decodeChunk(data []byte, want uint64, match chunkMatch) ([]ActivityRow, chunkSummary, error) {
	r := &chunkReader{b: data}
	var none chunkSummary
	if v := r.byte("version"); r.err == nil && v != activityCodecVersion {
		return nil, none, fmt.Errorf("%w: version %d", errChunk, v)
	}
	nStrings := r.count("string table", math.MaxUint32)
	if r.err != nil {
		return nil, none, r.err
	}
	start := len(data) - len(r.b)
	t := &chunkTable{spans: make([]chunkSpan, nStrings)}
	for i := range t.spans {
		n := r.count("string length", math.MaxUint32)
		from := len(data) - len(r.b) - start
		r.bytes(n, "string")
		t.spans[i] = chunkSpan{uint32(from), uint32(from + n)}
	}
	if r.err != nil {
		return nil, none, r.err
	}
	t.raw = data[start : len(data)-len(r.b)]
	n := r.count("entries", maxChunkEntries)
	if r.err == nil && n == 0 {
		r.fail("no entries")
	}
	at := r.varint("first time")
	first := at
	if r.err != nil {
		return nil, none, r.err
	}
	var out []ActivityRow
	var id, prevID []byte  // the current and the previous entry's
	var fields entryFields // one for every entry: match's pointer escapes
	for i := range n {
		id = id[:0]
		switch form := r.byte("id form"); form {
		case idFormActivity:
			if raw := r.bytes(16, "id"); r.err == nil {
				id = appendActivityID(id, raw)
			}
		case idFormString:
			raw := r.bytes(r.count("id length", math.MaxUint32), "id")
			// An ID of the activity form is always stored in it, so
			// that each ID has one encoding.
			if _, ok := activityIDBytes(raw); r.err == nil && (ok || len(raw) == 0) {
				r.fail("id")
			}
			id = append(id, raw...)
		default:
			r.fail("id form")
		}
		if i > 0 {
			d := r.uvarint("time")
			if r.err == nil && d > uint64(math.MaxInt64)-uint64(at) { // exact modulo 2⁶⁴
				r.fail("time")
			}
			// Strictly increasing (At, ID): each entry once, in the
			// order the queries rely on.
			if r.err == nil && d == 0 && bytes.Compare(id, prevID) <= 0 {
				r.fail("entries out of order")
			}
			at += int64(d)
		}
		rest := r.bytes(r.count("entry length", math.MaxUint32), "entry")
		if r.err != nil {
			return nil, none, r.err
		}
		id, prevID = prevID, id
		if want&(1<<i) == 0 {
			continue
		}
		e := &chunkReader{b: rest}
		var s [chunkStrings]string
		for f := range s {
			s[f] = t.str(e, "string index")
		}
		port, status := e.int("port"), e.int("status")
		in, outBytes, dur := e.varint("bytes in"), e.varint("bytes out"), e.varint("duration")
		nCreds := e.count("credentials", math.MaxUint32)
		creds := e.b
		for range nCreds {
			t.str(e, "credential")
		}
		if e.err == nil && len(e.b) != 0 {
			e.fail("entry length")
		}
		if e.err != nil {
			return nil, none, e.err
		}
		fields = entryFields{At: at, Session: s[1], Agent: s[2], Service: s[3], Host: s[5], Decision: s[7], Code: s[8], Status: status}
		if match != nil && !match(&fields) {
			continue
		}
		row := ActivityRow{ID: string(prevID), At: fromNanos(at), Instance: s[0], Session: s[1], Agent: s[2],
			Service: s[3], Method: s[4], Host: s[5], Port: port, Path: s[6], Status: status, Decision: s[7], Code: s[8],
			Reason: s[9], BytesIn: in, BytesOut: outBytes, Duration: time.Duration(dur), Credentials: make([]string, nCreds),
			Client: s[10]}
		cr := &chunkReader{b: creds} // read once already: cannot fail
		for c := range row.Credentials {
			row.Credentials[c] = t.str(cr, "credential")
		}
		out = append(out, row)
	}
	if len(r.b) != 0 {
		return nil, none, fmt.Errorf("%w: trailing bytes", errChunk)
	}
	return out, chunkSummary{entries: n, first: first, last: at}, nil
}

// chunkTable is a chunk's string table: where each string is in raw,
// all of which becomes one string (one copy) when an entry needs one.
type chunkTable struct {
	raw   []byte
	spans []chunkSpan
	all   string
	made  bool
}

type chunkSpan struct{ from, to uint32 }

// str reads an index into the table and returns its string.
func (t *chunkTable) str(r *chunkReader, what string) string {
	i := r.uvarint(what)
	if r.err != nil || i >= uint64(len(t.spans)) {
		r.fail(what)
		return ""
	}
	if !t.made {
		t.all, t.made = string(t.raw), true
	}
	sp := t.spans[i]
	return t.all[sp.from:sp.to]
}
