package scrub

import (
	"bytes"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The reference: the contract of the Redactor written the obvious way,
// independently of decode.go and scan.go. It parses with regular
// expressions and takes escape values from encoding/json and html,
// keeps a per-byte origin, compares every pattern at every position of
// both views, and replaces the union of the spans.

// refSpans lists every match of every pattern in both views of s, as
// input spans widened to whole units.
func refSpans(pats []string, s string) [][3]int {
	units, raw, dec, rawUnit, decUnit := refViews(s)
	raw, dec = refFold(raw), refFold(dec)
	var spans [][3]int
	for j, p := range pats {
		for i := 0; i+len(p) <= len(raw); i++ {
			if raw[i:i+len(p)] == p {
				spans = append(spans, [3]int{units[rawUnit[i]].start, units[rawUnit[i+len(p)-1]].end, j})
			}
		}
		for d := 0; d+len(p) <= len(dec); d++ {
			if dec[d:d+len(p)] == p {
				spans = append(spans, [3]int{units[decUnit[d]].start, units[decUnit[d+len(p)-1]].end, j})
			}
		}
	}
	return spans
}

// referenceRedact redacts s per the contract, with r's patterns and
// stand-ins.
func referenceRedact(r *Redactor, s string) string {
	if r.m == nil {
		return s
	}
	spans := refSpans(r.m.pats, s)
	slices.SortFunc(spans, func(a, b [3]int) int {
		if a[0] != b[0] {
			return a[0] - b[0]
		}
		if a[1] != b[1] {
			return b[1] - a[1]
		}
		return a[2] - b[2]
	})
	var out strings.Builder
	pos := 0
	for i := 0; i < len(spans); {
		first, end := spans[i], spans[i][1]
		for i++; i < len(spans) && spans[i][0] < end; i++ {
			end = max(end, spans[i][1])
		}
		next := len(s) // the next span, which bounds the kept text after this one
		if i < len(spans) {
			next = spans[i][0]
		}
		out.WriteString(s[pos:first[0]])
		repl := r.repl[first[2]]
		// The stand-in must not join its neighbours: an escape running
		// into it, a pattern overlapping it on the left (in the output so
		// far) or on the right (in the kept text after it).
		// And one that a pattern could overlap on the right is only used
		// for a span of at most maxEscape bytes per byte of the longest
		// pattern (a stream would otherwise wait for the end of a run of
		// overlapping matches without bound).
		if before := out.String(); r.mask != "" && repl != r.mask &&
			(refStraddles(before, repl) || refOverlaps(r.m.pats, before+repl, len(before), len(before)+len(repl)) ||
				refOverlaps(r.m.pats, repl+s[end:next], 0, len(repl)) ||
				refRightRisk(r.m.pats, repl) && end-first[0] > maxEscape*slices.Max(refLens(r.m.pats))) {
			repl = r.mask
		}
		out.WriteString(repl)
		pos = end
	}
	out.WriteString(s[pos:])
	return out.String()
}

// refRightRisk reports whether a pattern could begin inside standIn and
// go on past it.
func refRightRisk(pats []string, standIn string) bool {
	f := refFold(standIn)
	for _, p := range pats {
		for k := 1; k <= len(p) && k <= len(f); k++ {
			if strings.HasPrefix(p, f[len(f)-k:]) {
				return true
			}
		}
	}
	return false
}

func refLens(pats []string) []int {
	var n []int
	for _, p := range pats {
		n = append(n, len(p))
	}
	return n
}

// refStraddles reports whether an escape beginning in the text before a
// stand-in runs into it.
func refStraddles(before, standIn string) bool {
	for i := range len(before) {
		if n, _ := refEscapeAt(before[i:] + standIn); n > len(before)-i {
			return true
		}
	}
	return false
}

// refOverlaps reports whether a match in w overlaps w[lo:hi].
func refOverlaps(pats []string, w string, lo, hi int) bool {
	for _, sp := range refSpans(pats, w) {
		if sp[0] < hi && sp[1] > lo {
			return true
		}
	}
	return false
}

// refLeaks returns a pattern found in either view of s, or "".
func refLeaks(pats []string, s string) string {
	_, raw, dec, _, _ := refViews(s)
	for _, v := range []string{refFold(raw), refFold(dec)} {
		for _, p := range pats {
			if strings.Contains(v, p) {
				return p
			}
		}
	}
	return ""
}

// refMatches lists every match of every pattern in s as a path through
// the input, without the greedy parse's units: from its start, each
// step takes the next input byte literally (folded) or an escape that
// parses at that byte (refEscapeAt) and decodes to the next pattern
// bytes. The start may be any byte, inside an escape too. Two rules
// keep the paths to one level of decoding: a path that starts inside an
// escape of the parse takes that escape's rest literally (in "\\u0041"
// the "\u0041" after "\\" is text), and a starter is taken literally
// where an escape parses only if the match ends inside that escape (in
// "%41" the "%" is no text but the escape's, unless the pattern ends in
// "%" or "%4").
func refMatches(pats []string, s string) [][2]int {
	units := refParse(s)
	unitOf := make([]refUnit, len(s))
	for _, u := range units {
		for i := u.start; i < u.end; i++ {
			unitOf[i] = u
		}
	}
	// The escape at every byte, and the folded input.
	in := refInput{s: s, fs: refFold(s), n: make([]int, len(s)), dec: make([]string, len(s))}
	for i := range len(s) {
		n, dec := refEscapeAt(s[i:])
		in.n[i], in.dec[i] = n, refFold(dec)
	}
	var out [][2]int
	for _, p := range pats {
		for i := range len(s) {
			pos, k := i, 0
			if u := unitOf[i]; u.start < i {
				// Inside an escape: its rest is text.
				for ; pos < u.end && k < len(p) && in.fs[pos] == p[k]; pos, k = pos+1, k+1 {
				}
				if k < len(p) && pos < u.end {
					continue
				}
			}
			for _, e := range refPaths(p, &in, pos, k) {
				out = append(out, [2]int{i, e})
			}
		}
	}
	return out
}

// refInput is the input of refMatches: s, folded, and the escape at
// each byte (length and folded value).
type refInput struct {
	s, fs string
	n     []int
	dec   []string
}

// refPaths returns the input ends of the paths that consume p[k:] from
// input position pos.
func refPaths(p string, in *refInput, pos, k int) []int {
	if k == len(p) {
		return []int{pos}
	}
	if pos == len(in.s) {
		return nil
	}
	var ends []int
	n, dec := in.n[pos], in.dec[pos]
	if n > 0 && strings.HasPrefix(p[k:], dec) && dec != "" {
		ends = append(ends, refPaths(p, in, pos+n, k+len(dec))...)
	}
	if in.fs[pos] == p[k] {
		switch rest := len(p) - k; {
		case n == 0:
			ends = append(ends, refPaths(p, in, pos+1, k+1)...)
		case rest < n && in.fs[pos:pos+rest] == p[k:]:
			ends = append(ends, pos+rest) // ends inside the escape
		}
	}
	return ends
}

// hasStarter reports whether data holds an escape starter.
func hasStarter(data []byte) bool { return bytes.ContainsAny(data, `%\&`) }

// checkRedactor asserts, for input without escape starters, String ==
// reference; for any input, that every match of refMatches (and of the
// reference) lies inside the replaced spans, that the output holds no
// pattern, and that Reader == String under random chunking.
func checkRedactor(t *testing.T, r *Redactor, data []byte, seed uint64) {
	t.Helper()
	got := r.String(string(data))
	if !hasStarter(data) {
		want := referenceRedact(r, string(data))
		if r.m != nil && r.mask != "" {
			if p := refLeaks(r.m.pats, want); p != "" {
				t.Fatalf("reference output %q holds pattern %q (stand-ins %q, mask %q)", want, p, r.repl, r.mask)
			}
		}
		if got != want {
			t.Fatalf("String(%q) = %q, want %q", data, got, want)
		}
	}
	if r.m != nil {
		sc := scratches.Get().(*scratch)
		r.analyze(data, true, sc)
		covered := make([]bool, len(data))
		for _, sp := range sc.spans {
			for i := sp.start; i < sp.end; i++ {
				covered[i] = true
			}
		}
		scratches.Put(sc)
		var must [][2]int
		for _, sp := range refSpans(r.m.pats, string(data)) {
			must = append(must, [2]int{sp[0], sp[1]})
		}
		must = append(must, refMatches(r.m.pats, string(data))...)
		for _, m := range must {
			if i := slices.Index(covered[m[0]:m[1]], false); i >= 0 {
				t.Fatalf("%q: the match %q at %d is not replaced (byte %d)", data, data[m[0]:m[1]], m[0], m[0]+i)
			}
		}
		if r.mask != "" {
			if p := refLeaks(r.m.pats, got); p != "" {
				t.Fatalf("String(%q) = %q holds pattern %q", data, got, p)
			}
			if ms := refMatches(r.m.pats, got); len(ms) > 0 {
				t.Fatalf("String(%q) = %q holds %q", data, got, got[ms[0][0]:ms[0][1]])
			}
		}
		if want := len(must) > 0; want && !r.contains(string(data)) {
			t.Fatalf("contains(%q) = false", data)
		}
	}
	want := got
	rd := r.Reader(&chunkReader{data: data, rng: rand.New(rand.NewPCG(seed, seed>>1))})
	streamed, err := io.ReadAll(rd)
	if err != nil || !bytes.Equal(streamed, []byte(want)) {
		t.Fatalf("Reader(%q) = %q, %v; want %q", data, streamed, err, want)
	}
}

func FuzzRedactor(f *testing.F) {
	f.Add("secret", "abc", "abcd", "agvph_0123", []byte("xx secret abcabcd abc secre"), uint64(1))
	f.Add("tokena", "a", "", "", []byte("tokentokena a"), uint64(2))
	f.Add("aa", "aaa", "aaaa", "a", []byte("aaaaaaaaaaa"), uint64(3))
	f.Add("\x00\xff", "x", "y", "*", []byte("\x00\x00\xff\xffxy"), uint64(4))
	f.Add("1bcdefgh", "J", "zzzzzzzJ", "[A]", []byte("%41bcdefgh zzzzzzz%4 Q zzzzzzz%41bcdefgh"), uint64(5))
	f.Add("sk-live-0123456789", "p@ss/w<rd>&\"x", "Zm9vYmFy", "agvph_0123",
		[]byte(`{"a":"sk\u002dlive-0123456789","b":"p%40ss%2Fw%3Crd%3E%26%22x","c":"c2stbGl2ZS0wMTIzNDU2Nzg5"}`), uint64(6))
	f.Add("%41bcdefg", `\u0041bcdefg`, "&amp;bcdefg", "[X]", []byte(`%2541bcdefg \\u0041bcdefg &amp;amp;bcdefg %41bcdefg`), uint64(7))
	f.Add("abcdefgh", "ABCDEFGH", "efghijkl", "agvph_", []byte("xABCDEFGHIJKLx abcdefghijkl %61%62cdefgh"), uint64(8))
	f.Add("\U0001F600secret!", "x", "y", "[E]", []byte(`\uD83D\uDE00secret! &#x1F600;secret! &#128512;SECRET! \uD83D`), uint64(9))
	// Stand-ins next to text they would join (ph starts with a, ends with f).
	f.Add("fxyzxyzxyz", "Zk3+secret", "qwertyuiopa", "[F]",
		[]byte("qwertyuiopZk3+secret Zk3+secretxyzxyzxyz %4Zk3+secret qwertyuio%70zk3+SECRET!"), uint64(10))
	f.Add("aaaaaaaa", "fxyzxyzxyz", "xyz", ph, []byte("aaaaaaaaaaaaaaaaaaaaaaaaaxyzxyzxyzaaaaaaaaaaaa%61aaaaaaa"), uint64(11))
	// Secrets whose edges the escapes next to them swallow.
	f.Add("AKIAIOSFODNN7", "nopeSECRET", "abcdefSECRET%4", "[A]",
		[]byte(`%2AKI\u0041IOSFODNN7 x=%2AKI&#65;IOSFODNN7 \nop%65SECRET <\x61bcdefSECRET%41>`), uint64(12))
	f.Add("41SECRETv", "p;SECRETv", "keyEXAMPLEx&am", "[A]",
		[]byte(`\u0041SECRETv &amp;SECRET\x76 k%65yEXAMPLEx&amp; \\u0041SECRETv`), uint64(13))
	f.Fuzz(func(t *testing.T, a, b, c, replA string, data []byte, seed uint64) {
		limit := func(s string) string { return s[:min(len(s), 24)] }
		a, b, c = limit(a), limit(b), limit(c)
		if len(data) > 4096 {
			data = data[:4096] // the reference is quadratic
		}
		checkRedactor(t, redactorOf(map[string]string{a: replA, b: ph, c: "[C]"}), data, seed)

		// The same secrets with their derived forms.
		var set SecretSet
		set.Add(a, ph)
		set.Add(b, replA)
		set.AddWritten(c)
		if r := (&Cache{}).Redactor(&set); r != nil {
			checkRedactor(t, r, data, seed+1)
		}
	})
}
