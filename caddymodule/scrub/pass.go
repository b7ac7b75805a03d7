package scrub

import "slices"

// A pass scans a buffer of input once: it finds every match in both
// views as a span of the input, decides how much of the buffer is
// final, and writes the output for that part. String is one final
// pass; the Reader runs one per read, over the held-back tail and the
// new bytes.

// span is a match as a span of the input, extended to unit boundaries
// of the parse, with its pattern.
type span struct{ start, end, pat int }

// spanOrder sorts leftmost first, then longest, then by pattern rank:
// the first span of a merged group chooses its stand-in.
func spanOrder(a, b span) int {
	switch {
	case a.start != b.start:
		return a.start - b.start
	case a.end != b.end:
		return b.end - a.end
	}
	return a.pat - b.pat
}

// scratch is memory a pass reuses.
type scratch struct {
	view  view // of the buffer
	ctx   view // of a stand-in's neighbourhood
	hits  []hit
	spans []span
	win   []byte
	// ctxSpans are the edge matches of a stand-in's neighbourhood.
	ctxSpans []span
	// before backs a String's cursor.before between uses.
	before []byte
}

// cursor is what a pass hands on to the next.
type cursor struct {
	// covered is how many bytes at the start of the next buffer the
	// last stand-in already replaced: a later match starting inside
	// them merges into its span.
	covered int
	// before is the end of the output so far, from a unit boundary of
	// its parse: the left neighbourhood of the next stand-in.
	before []byte
	// lazy (String): no stand-in yet, so the output is src[:kept] and
	// is not built.
	lazy bool
	src  string
	kept int
}

// analyze scans b, which starts at a unit boundary of the parse, and
// fills sc.spans with every match, sorted by spanOrder. It returns h:
// no match yet to be completed by more input starts before h, so spans
// starting before h are final, as is the text before h outside them.
// With final, nothing follows b and h is len(b).
func (r *Redactor) analyze(b []byte, final bool, sc *scratch) int {
	mt, v := r.m, &sc.view
	p := v.parse(b, final) // the parse is decided up to p
	h := p
	sc.spans = sc.spans[:0]

	// The raw view: the bytes as sent.
	sc.hits = mt.find(b, sc.hits[:0])
	for _, m := range sc.hits {
		end := m.start + len(mt.pats[m.pat])
		if end > p {
			// It ends in an undecided unit, so its extent is unknown:
			// next pass.
			h = min(h, v.unitStart(m.start))
			continue
		}
		sc.spans = append(sc.spans, span{v.unitStart(m.start), v.unitEnd(end), m.pat})
	}
	if !final {
		if q := mt.partial(b); q < len(b) {
			h = min(h, v.unitStart(q))
		}
	}

	// The decoding view of the decided prefix. A match in it that holds
	// no decoded escape is a raw match too (also one beginning or ending
	// inside an escape: those bytes are raw); and an escape decoding to
	// bytes no pattern has cannot be in a match. So with no other
	// escape, the view adds only a partial match running into the
	// undecided escape.
	if !mt.relevant(v.esc) {
		if !final && p < len(b) {
			h = min(h, v.unitStart(mt.partial(b[:p])))
		}
	} else {
		v.build(b[:p])
		sc.hits = mt.find(v.dec, sc.hits[:0])
		for _, m := range sc.hits {
			sc.spans = append(sc.spans, span{v.inStart(m.start), v.inEnd(m.start + len(mt.pats[m.pat])), m.pat})
		}
		// And those that begin or end inside an escape (edge.go).
		sc.spans = mt.edgeSpans(b[:p], v, sc.spans)
		if !final {
			if q := mt.partial(v.dec); q < len(v.dec) {
				h = min(h, v.inStart(q))
			}
			h = min(h, mt.edgePartial(b[:p], v))
		}
	}
	if len(sc.spans) > 1 {
		slices.SortFunc(sc.spans, spanOrder)
	}
	return h
}

// emit appends to out the output for b up to h given the pass's spans:
// overlapping spans merge, and each merged span is replaced by the
// stand-in of its first. It returns how much of b is done: h, or the
// start of a span whose stand-in waits for its right neighbour. A span
// starting before h may end after it; cur records how far.
func (r *Redactor) emit(b []byte, h int, final bool, sc *scratch, cur *cursor, out []byte) ([]byte, int) {
	spans := sc.spans
	pos := cur.covered // b[:pos] is accounted for
	done := h
	for i := 0; i < len(spans) && spans[i].start < h; i++ {
		sp := spans[i]
		if sp.start < pos { // overlaps the span before: merge
			pos = max(pos, sp.end)
			continue
		}
		out = r.keep(out, b, pos, sp.start, sc, cur)
		pos = sp.start
		s, ok := r.standIn(b, h, final, i, sc, cur)
		if !ok {
			done = sp.start
			break
		}
		if cur.lazy {
			out = append(make([]byte, 0, len(cur.src)+len(s)), cur.src[:cur.kept]...)
			cur.lazy = false
		}
		out = append(out, s...)
		cur.before = append(cur.before, s...)
		r.trim(cur, sc)
		pos = sp.end
	}
	if pos < done {
		out = r.keep(out, b, pos, done, sc, cur)
		pos = done
	}
	cur.covered = pos - done
	return out, done
}

// standIn decides what replaces spans[i], a new merged span, given the
// output before it; ok is false if that depends on input yet to come.
func (r *Redactor) standIn(b []byte, h int, final bool, i int, sc *scratch, cur *cursor) (s string, ok bool) {
	spans := sc.spans
	pat := spans[i].pat
	s = r.repl[pat]
	if r.mask == "" || s == r.mask {
		return s, true
	}
	if straddles(cur.before, s) {
		return r.mask, true
	}
	if r.leftRisk[pat] {
		sc.win = append(append(sc.win[:0], cur.before...), s...)
		if r.overlapsIn(sc.win, len(cur.before), len(sc.win), sc) {
			return r.mask, true
		}
	}
	if !r.rightRisk[pat] {
		return s, true
	}
	// The right neighbour: the text kept after the merged span, up to
	// the next span, as far as a pattern overlapping s could reach.
	end, j := spans[i].end, i+1
	for ; j < len(spans) && spans[j].start < end; j++ {
		end = max(end, spans[j].end)
	}
	if end-spans[i].start > r.spanLimit {
		// Only a run of overlapping matches is this long; waiting for
		// its end would buffer without bound.
		return r.mask, true
	}
	if end > h {
		return "", false // a match yet to come may extend the span
	}
	next := h
	if j < len(spans) && spans[j].start < h {
		next = spans[j].start
	}
	complete := final || next < h
	if limit := end + maxEscape*r.m.longest; limit < next {
		next, complete = sc.view.boundaryFrom(limit), true
	}
	sc.win = append(append(sc.win[:0], s...), b[end:next]...)
	switch {
	case r.overlapsIn(sc.win, 0, len(s), sc):
		return r.mask, true
	case !complete && r.partialFrom(sc.win, len(s), sc):
		return "", false
	}
	return s, true
}

// keep appends the kept text b[from:to] to out and to cur.before.
func (r *Redactor) keep(out, b []byte, from, to int, sc *scratch, cur *cursor) []byte {
	if from >= to {
		return out
	}
	if to-from >= r.ctxLen {
		cur.before = append(cur.before[:0], b[sc.view.boundaryFrom(to-r.ctxLen):to]...)
	} else {
		cur.before = append(cur.before, b[from:to]...)
		r.trim(cur, sc)
	}
	if cur.lazy {
		cur.kept += to - from
		return out
	}
	return append(out, b[from:to]...)
}

// trim bounds cur.before to about ctxLen bytes, cutting on a unit
// boundary so it still parses as the output does.
func (r *Redactor) trim(cur *cursor, sc *scratch) {
	if len(cur.before) <= 2*r.ctxLen {
		return
	}
	v := &sc.ctx
	v.parse(cur.before, true)
	cut := v.boundaryFrom(len(cur.before) - r.ctxLen)
	cur.before = cur.before[:copy(cur.before, cur.before[cut:])]
}
