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
//	  uvarint table index of Instance, Session, Agent, Service,
//	          Method, Host, Path, Decision, Code, Reason, Client
//	  varint  Port, Status, BytesIn, BytesOut, Duration (nanoseconds)
//	  uvarint credentials; each a uvarint table index
//
// Every string but the ID goes through the table: a batch repeats its
// session, agent, service, host and most else from entry to entry, so
// a chunk stores each once. Nothing follows the last entry.
//
// The decoder is strict: it never panics, refuses any malformed input
// with an error (a length or count beyond what is left, an index past
// the table, an unknown version or ID form, entries out of order,
// trailing bytes) and allocates in proportion to its input.
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
		for f, s := range [chunkStrings]string{r.Instance, r.Session, r.Agent, r.Service, r.Method, r.Host, r.Path,
			r.Decision, r.Code, r.Reason, r.Client} {
			// Most fields repeat the previous entry's: no map lookup.
			if l := &e.last[f]; s != l.s {
				l.s, l.ref = s, e.intern(s)
			}
			e.body = binary.AppendUvarint(e.body, e.last[f].ref)
		}
		for _, n := range [...]int64{int64(r.Port), int64(r.Status), r.BytesIn, r.BytesOut, int64(r.Duration)} {
			e.body = binary.AppendVarint(e.body, n)
		}
		e.body = binary.AppendUvarint(e.body, uint64(len(r.Credentials)))
		for _, c := range r.Credentials {
			e.body = binary.AppendUvarint(e.body, e.intern(c))
		}
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
// decode to the same string).
func activityIDBytes(id string) (b [16]byte, ok bool) {
	if len(id) != len(activityIDPrefix)+32 || id[:len(activityIDPrefix)] != activityIDPrefix {
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

func (r *chunkReader) uvarint(what string) uint64 {
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

func (r *chunkReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
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

// decodeChunk returns the entries of a chunk's value that match
// selects (nil: all), in the chunk's order, and the chunk's summary;
// an error for any malformed value.
func decodeChunk(data []byte, match chunkMatch) ([]ActivityRow, chunkSummary, error) {
	r := &chunkReader{b: data}
	if v := r.byte("version"); r.err == nil && v != activityCodecVersion {
		return nil, chunkSummary{}, fmt.Errorf("%w: version %d", errChunk, v)
	}
	nStrings := r.count("string table", math.MaxUint32)
	if r.err != nil {
		return nil, chunkSummary{}, r.err
	}
	// The table's strings are substrings of one copy of the table's
	// bytes: one allocation, however many strings.
	type span struct{ from, to int }
	spans := make([]span, nStrings)
	start := len(data) - len(r.b)
	for i := range spans {
		n := r.count("string length", math.MaxUint32)
		from := len(data) - len(r.b)
		r.bytes(n, "string")
		spans[i] = span{from - start, from - start + n}
	}
	if r.err != nil {
		return nil, chunkSummary{}, r.err
	}
	blob := string(data[start : len(data)-len(r.b)])
	table := make([]string, nStrings)
	for i, s := range spans {
		table[i] = blob[s.from:s.to]
	}
	n := r.count("entries", maxChunkEntries)
	if r.err == nil && n == 0 {
		r.fail("no entries")
	}
	at := r.varint("first time")
	first := at
	if r.err != nil {
		return nil, chunkSummary{}, r.err
	}
	str := func(what string) string {
		i := r.uvarint(what)
		if r.err != nil || i >= uint64(len(table)) {
			r.fail(what)
			return ""
		}
		return table[i]
	}
	var out []ActivityRow
	var id, prevID []byte // the current and the previous entry's
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
			if _, ok := activityIDBytes(string(raw)); r.err == nil && (ok || len(raw) == 0) {
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
		var s [chunkStrings]string
		for f := range s {
			s[f] = str("string index")
		}
		port, status := r.int("port"), r.int("status")
		in, outBytes, dur := r.varint("bytes in"), r.varint("bytes out"), r.varint("duration")
		nCreds := r.count("credentials", math.MaxUint32)
		creds := r.b
		for range nCreds {
			str("credential")
		}
		if r.err != nil {
			return nil, chunkSummary{}, r.err
		}
		id, prevID = prevID, id
		fields := entryFields{At: at, Session: s[1], Agent: s[2], Service: s[3], Host: s[5], Decision: s[7], Code: s[8], Status: status}
		if match != nil && !match(&fields) {
			continue
		}
		row := ActivityRow{ID: string(prevID), At: fromNanos(at), Instance: s[0], Session: s[1], Agent: s[2],
			Service: s[3], Method: s[4], Host: s[5], Port: port, Path: s[6], Status: status, Decision: s[7], Code: s[8],
			Reason: s[9], BytesIn: in, BytesOut: outBytes, Duration: time.Duration(dur), Credentials: make([]string, nCreds),
			Client: s[10]}
		cr := chunkReader{b: creds} // read once already: cannot fail
		for c := range row.Credentials {
			row.Credentials[c] = table[cr.uvarint("credential")]
		}
		out = append(out, row)
	}
	if len(r.b) != 0 {
		return nil, chunkSummary{}, fmt.Errorf("%w: trailing bytes", errChunk)
	}
	return out, chunkSummary{entries: n, first: first, last: at}, nil
}
