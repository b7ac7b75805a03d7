package scrub

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func FuzzRedactor(f *testing.F) {
	f.Add("secret", "abc", "abcd", "agvph_0123", []byte("xx secret abcabcd abc secre"), uint64(1))
	f.Add("tokena", "a", "", "", []byte("tokentokena a"), uint64(2))
	f.Add("aa", "aaa", "aaaa", "a", []byte("aaaaaaaaaaa"), uint64(3))
	f.Add("\x00\xff", "x", "y", "*", []byte("\x00\x00\xff\xffxy"), uint64(4))
	f.Fuzz(func(t *testing.T, a, b, c, replA string, data []byte, seed uint64) {
		limit := func(s string) string { return s[:min(len(s), 24)] }
		secrets := map[string]string{
			limit(a): replA,
			limit(b): "agvph_0123456789abcdef0123456789abcdef",
			limit(c): "[C]",
		}
		r := NewRedactor(secrets)
		want := referenceRedact(r, string(data))
		for s := range secrets {
			if s != "" && strings.Contains(want, s) {
				t.Fatalf("reference output %q contains secret %q (replacements %q)", want, s, r.effective())
			}
		}
		if got := r.String(string(data)); got != want {
			t.Fatalf("String = %q, want %q", got, want)
		}
		got, err := io.ReadAll(r.Reader(&chunkReader{data: data, rng: rand.New(rand.NewPCG(seed, seed>>1))}))
		if err != nil || !bytes.Equal(got, []byte(want)) {
			t.Fatalf("Reader = %q, %v; want %q", got, err, want)
		}
	})
}
