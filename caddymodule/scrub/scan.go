package scrub

import "slices"

// The matcher finds every occurrence of every pattern in a view,
// case-insensitively: input and patterns are both folded by foldTab.
//
// It samples. With m the length of the shortest pattern, w = min(4, m)
// and stride s = m-w+1, every occurrence of a pattern covers a w-gram
// that starts at a multiple of s, at an offset 0..m-w into the
// pattern. The hashes of all those (pattern, offset) grams are bits of
// a 64 Kbit filter; the view is hashed only every s bytes, and only a
// hit looks up its candidates and compares. Text without secrets costs
// a hash and a bit test per s bytes (s is 24 for a 27-byte API key).

// foldTab folds a byte for matching: ASCII upper to lower case (so
// upper-case hex, or a secret echoed upper-cased, still matches), and
// ' ' to '+' (so the '+' of query escaping stands for a space, and a
// space for the '+' of base64, in any mix).
var foldTab = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = byte(c) + 'a' - 'A'
	}
	t[' '] = '+'
	return t
}()

// fold returns s folded by foldTab.
func fold(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = foldTab[c]
	}
	return string(b)
}

// equalFold reports whether v folds to p (p already folded).
func equalFold(v []byte, p string) bool {
	if len(v) != len(p) {
		return false
	}
	for i := range len(p) {
		if foldTab[v[i]] != p[i] {
			return false
		}
	}
	return true
}

// matcher searches views for a fixed set of folded patterns.
type matcher struct {
	pats    []string // folded, distinct, in rank order
	m, w, s int      // shortest pattern, gram width, sampling stride
	longest int
	filter  [1 << 16 / 64]uint64 // bit per gram hash
	keys    []uint16             // gram hashes, sorted, parallel to cands
	cands   []gramAt
	// For partial matches at the end of a view: by first byte, and a
	// filter of the first two (hashed to 4 Kbit: it is consulted a few
	// hundred times a pass, and a Cache keeps a matcher for every set
	// of patterns it has seen, shared by the redactors that differ
	// only in stand-ins).
	byFirst [257]int32 // firstIx[byFirst[c]:byFirst[c+1]] are the patterns starting with c
	firstIx []int32
	pairs   [1 << 12 / 64]uint64
	// used marks the bytes that occur in some pattern.
	used [256]bool
	// Patterns that may begin or end inside an escape (see edge.go):
	// tails[byTail[c]:byTail[c+1]] are those whose j-th byte is c.
	byTail [257]int32
	tails  []edgeAt
	heads  []edgeAt
}

// gramAt is a pattern with the gram at off in it.
type gramAt struct{ pat, off int32 }

// hit is an occurrence of pattern pat at start in a view.
type hit struct{ start, pat int }

func newMatcher(pats []string) *matcher {
	mt := &matcher{pats: pats}
	if len(pats) == 0 {
		return mt
	}
	mt.m = len(pats[0])
	for _, p := range pats {
		mt.m = min(mt.m, len(p))
		mt.longest = max(mt.longest, len(p))
	}
	mt.w = min(4, mt.m)
	mt.s = mt.m - mt.w + 1
	// Candidates sorted by gram hash: packed as hash, pattern, offset
	// in one word so a plain sort orders them (pattern counts and
	// offsets stay far below 2^24).
	var entries []uint64
	for j, p := range pats {
		for off := 0; off+mt.w <= mt.m; off++ {
			k := gramHash(gram(p[off:], mt.w))
			mt.filter[k>>6] |= 1 << (k & 63)
			entries = append(entries, uint64(k)<<48|uint64(j)<<24|uint64(off))
		}
	}
	slices.Sort(entries)
	mt.keys = make([]uint16, len(entries))
	mt.cands = make([]gramAt, len(entries))
	for i, e := range entries {
		mt.keys[i] = uint16(e >> 48)
		mt.cands[i] = gramAt{int32(e >> 24 & (1<<24 - 1)), int32(e & (1<<24 - 1))}
	}

	order := make([]int32, len(pats))
	for j := range order {
		order[j] = int32(j)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return int(pats[a][0]) - int(pats[b][0]) })
	mt.firstIx = order
	for c, i := 0, 0; c <= 256; c++ {
		for i < len(order) && int(pats[order[i]][0]) < c {
			i++
		}
		mt.byFirst[c] = int32(i)
	}
	for _, p := range pats {
		for i := range len(p) {
			mt.used[p[i]] = true
		}
		if len(p) >= 2 {
			k := pairHash(p[0], p[1])
			mt.pairs[k>>6] |= 1 << (k & 63)
		}
	}
	mt.buildEdges()
	return mt
}

// gram packs the first w bytes of s (already folded).
func gram(s string, w int) uint32 {
	var x uint32
	for i := range w {
		x |= uint32(s[i]) << (8 * i)
	}
	return x
}

func gramHash(x uint32) uint16 { return uint16((x * 0x9E3779B1) >> 16) }

func pairHash(a, b byte) uint16 { return uint16((uint32(a)<<8 | uint32(b)) * 0x9E3779B1 >> 20) }

// find appends every occurrence in v (overlapping ones included), in no
// particular order.
func (mt *matcher) find(v []byte, hits []hit) []hit {
	n := len(v)
	if len(mt.pats) == 0 || n < mt.m {
		return hits
	}
	s, ft := mt.s, &foldTab
	if mt.w == 4 {
		for q := 0; q+4 <= n; q += s {
			b := v[q : q+4 : q+4]
			x := uint32(ft[b[0]]) | uint32(ft[b[1]])<<8 | uint32(ft[b[2]])<<16 | uint32(ft[b[3]])<<24
			if k := gramHash(x); mt.filter[k>>6]&(1<<(k&63)) != 0 {
				hits = mt.verify(v, q, k, hits)
			}
		}
		return hits
	}
	for q := 0; q+mt.w <= n; q += s {
		var x uint32
		for i := range mt.w {
			x |= uint32(ft[v[q+i]]) << (8 * i)
		}
		if k := gramHash(x); mt.filter[k>>6]&(1<<(k&63)) != 0 {
			hits = mt.verify(v, q, k, hits)
		}
	}
	return hits
}

// verify compares the candidates of gram hash k sampled at q.
func (mt *matcher) verify(v []byte, q int, k uint16, hits []hit) []hit {
	i, _ := slices.BinarySearch(mt.keys, k)
	for ; i < len(mt.keys) && mt.keys[i] == k; i++ {
		c := mt.cands[i]
		p := mt.pats[c.pat]
		t := q - int(c.off)
		if t >= 0 && t+len(p) <= len(v) && equalFold(v[t:t+len(p)], p) {
			hits = append(hits, hit{t, int(c.pat)})
		}
	}
	return hits
}

// partial returns the earliest position from which the rest of v is a
// proper prefix of some pattern (a match more input may complete), or
// len(v).
func (mt *matcher) partial(v []byte) int {
	n := len(v)
	for q := max(0, n-mt.longest+1); q < n; q++ {
		c := foldTab[v[q]]
		if q+1 < n {
			if k := pairHash(c, foldTab[v[q+1]]); mt.pairs[k>>6]&(1<<(k&63)) == 0 {
				continue
			}
		}
		for _, j := range mt.firstIx[mt.byFirst[c]:mt.byFirst[int(c)+1]] {
			if p := mt.pats[j]; len(p) > n-q && equalFold(v[q:], p[:n-q]) {
				return q
			}
		}
	}
	return n
}

// relevant reports whether some escape decodes to a byte that occurs in
// a pattern (folded): only then can the decoding view hold a match the
// raw view does not.
func (mt *matcher) relevant(esc []escape) bool {
	for i := range esc {
		e := &esc[i]
		for _, c := range e.dec[:e.dn] {
			if mt.used[foldTab[c]] {
				return true
			}
		}
	}
	return false
}
