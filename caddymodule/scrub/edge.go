package scrub

import "slices"

// Matches at the edges of escapes. The greedy parse can swallow a
// secret's first bytes into the escape before it: in "%2" followed by
// "AKI\u0041IOSF..." the parse reads "%2A" ("*"), so the decoding view
// has "*KIAIOSF..." and, with a byte escaped inside the secret, the raw
// view lacks it too, while a decoder of JSON only reads "%2AKIAIOSF...".
// The mirror image: a secret ending in "%" or "\u00" whose escape the
// bytes after it complete. So a match in the decoding view may also
// begin inside the escape just before it (the pattern's first j bytes
// are that escape's last j input bytes, folded) and end inside the
// escape just after it (the pattern's last j bytes are its first j
// input bytes); its span covers those escapes whole.
//
// Only some (pattern, j) can: the tail p[:j] must consist of bytes an
// escape can hold after its starter and end in one an escape can end
// with, the head p[len(p)-j:] must begin with a starter. The matcher
// lists those at build time (usually a few per pattern, none for a head
// unless the pattern ends in escape-like text); the parse decides each
// occurrence: a candidate is checked against the input bytes of the
// actual neighbouring escape.

// edgeAt is a pattern whose first (tail) or last (head) j bytes may lie
// inside an escape.
type edgeAt struct{ pat, j int32 }

// inEscape reports the bytes an escape can hold after its starter, and
// endsEscape those it can end with.
func inEscape(c byte) bool   { return continuesEscape(c) }
func endsEscape(c byte) bool { return isHex(c) || c == ';' || c == '}' || simpleEscapes[c] != 0 }

// buildEdges fills mt.byTail, mt.tails and mt.heads.
func (mt *matcher) buildEdges() {
	var tails []edgeAt
	for i, p := range mt.pats {
		for j := 1; j < len(p) && j < maxEscape && inEscape(p[j-1]); j++ {
			if endsEscape(p[j-1]) {
				tails = append(tails, edgeAt{int32(i), int32(j)})
			}
		}
		for j := 1; j < len(p) && j < maxEscape; j++ {
			c := p[len(p)-j]
			if isStarter(c) {
				mt.heads = append(mt.heads, edgeAt{int32(i), int32(j)})
			} else if !inEscape(c) {
				break
			}
		}
	}
	// By the tail's last byte, then j.
	slices.SortFunc(tails, func(a, b edgeAt) int {
		if x, y := mt.pats[a.pat][a.j-1], mt.pats[b.pat][b.j-1]; x != y {
			return int(x) - int(y)
		}
		return int(a.j - b.j)
	})
	mt.tails = tails
	for c, i := 0, 0; c <= 256; c++ {
		for i < len(tails) && int(mt.pats[tails[i].pat][tails[i].j-1]) < c {
			i++
		}
		mt.byTail[c] = int32(i)
	}
}

// tailsOf returns the candidates whose tail could be the last input
// bytes of e (shorter than e), by increasing j.
func (mt *matcher) tailsOf(in []byte, e *escape) []edgeAt {
	c := foldTab[in[e.end()-1]]
	return mt.tails[mt.byTail[c]:mt.byTail[int(c)+1]]
}

// edgeSpans appends the matches of the decoding view v of in (its
// decided prefix, all of it parsed) that begin or end inside an escape.
func (mt *matcher) edgeSpans(in []byte, v *view, spans []span) []span {
	if len(mt.tails) > 0 {
		for k := range v.esc {
			u := &v.esc[k]
			d := u.out + int(u.dn)
			// The view byte after u, or an escape right after it: most
			// candidates fail on it.
			next, adjacent := -1, k+1 < len(v.esc) && v.esc[k+1].out == d
			if d < len(v.dec) {
				next = int(foldTab[v.dec[d]])
			}
			for _, t := range mt.tailsOf(in, u) {
				j := int(t.j)
				if j >= int(u.n) {
					break
				}
				p := mt.pats[t.pat]
				if (int(p[j]) == next || adjacent) && equalFold(in[u.end()-j:u.end()], p[:j]) {
					spans = mt.forward(in, v, k+1, d, p[j:], span{start: u.in, pat: int(t.pat)}, spans)
				}
			}
		}
	}
	for _, h := range mt.heads {
		p := mt.pats[h.pat]
		j := int(h.j)
		lp := p[:len(p)-j] // in the view, just before the escape
		for k := range v.esc {
			e := &v.esc[k]
			if j < int(e.n) && e.out >= len(lp) && equalFold(in[e.in:e.in+j], p[len(p)-j:]) &&
				equalFold(v.dec[e.out-len(lp):e.out], lp) {
				spans = append(spans, span{v.inStart(e.out - len(lp)), e.end(), int(h.pat)})
			}
		}
	}
	return spans
}

// forward appends the matches of rest, the pattern after the bytes
// inside an escape, in v from just after that escape; v.esc[k] is the
// next escape and d its view position. Each ends in the view, or inside
// an escape whose first input bytes are the rest of the pattern.
func (mt *matcher) forward(in []byte, v *view, k, d int, rest string, sp span, spans []span) []span {
	for i := 0; ; i++ {
		if i == len(rest) {
			sp.end = v.inEnd(d + i)
			return append(spans, sp)
		}
		if k < len(v.esc) && v.esc[k].out == d+i {
			e := &v.esc[k]
			if r := rest[i:]; len(r) < int(e.n) && equalFold(in[e.in:e.in+len(r)], r) {
				sp.end = e.end()
				spans = append(spans, sp)
			}
		}
		if d+i >= len(v.dec) || foldTab[v.dec[d+i]] != rest[i] {
			return spans
		}
		for k < len(v.esc) && v.esc[k].out <= d+i {
			k++
		}
	}
}

// edgePartial returns the earliest input start of a match of the view
// beginning inside an escape that more input may complete (the view
// after the escape, to its end, is a proper prefix of the rest), or
// len(in).
func (mt *matcher) edgePartial(in []byte, v *view) int {
	h := len(in)
	if len(mt.tails) == 0 {
		return h
	}
	for k := len(v.esc) - 1; k >= 0; k-- {
		u := &v.esc[k]
		d := u.out + int(u.dn)
		n := len(v.dec) - d
		if n >= mt.longest {
			break
		}
		for _, t := range mt.tailsOf(in, u) {
			j := int(t.j)
			if j >= int(u.n) {
				break
			}
			p := mt.pats[t.pat]
			if n < len(p)-j && equalFold(in[u.end()-j:u.end()], p[:j]) && equalFold(v.dec[d:], p[j:j+n]) {
				h = u.in
				break
			}
		}
	}
	return h
}
