package scrub

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The matcher finds exactly the occurrences a comparison at every
// position finds, whatever the pattern lengths (and so the stride), and
// partial reports the earliest unfinished one.
func TestMatcherAgainstComparison(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const alphabet = "abAB +%x"
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for n := 0; n < 2000; n++ {
		var pats []string
		for range 1 + rng.IntN(4) {
			if p := fold(word(1 + rng.IntN(12))); !slices.Contains(pats, p) {
				pats = append(pats, p)
			}
		}
		mt := newMatcher(pats)
		text := []byte(word(rng.IntN(200)))
		var want []hit
		for i := range text {
			for j, p := range pats {
				if i+len(p) <= len(text) && refFold(string(text[i:i+len(p)])) == p {
					want = append(want, hit{i, j})
				}
			}
		}
		got := mt.find(text, nil)
		order := func(a, b hit) int { return (a.start-b.start)*16 + a.pat - b.pat }
		slices.SortFunc(got, order)
		slices.SortFunc(want, order)
		if !slices.Equal(got, want) {
			t.Fatalf("patterns %q in %q: got %v, want %v", pats, text, got, want)
		}
		wantPartial := len(text)
	partial:
		for i := range text {
			for _, p := range pats {
				if rest := refFold(string(text[i:])); len(rest) < len(p) && strings.HasPrefix(p, rest) {
					wantPartial = i
					break partial
				}
			}
		}
		if got := mt.partial(text); got != wantPartial {
			t.Fatalf("patterns %q in %q: partial %d, want %d", pats, text, got, wantPartial)
		}
	}
}
