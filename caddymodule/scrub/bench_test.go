package scrub

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func BenchmarkRedactorReader(b *testing.B) {
	const secret = "sk-proj-0123456789abcdefXYZ"
	r := NewRedactor(map[string]string{secret: "agvph_0123456789abcdef0123456789abcdef"})
	// 1 MiB of JSON-ish text with the secret echoed once in the middle.
	line := `{"id":"chatcmpl-123","object":"chat.completion.chunk","choices":[{"delta":{"content":"sk- is a prefix"}}]}` + "\n"
	body := []byte(strings.Repeat(line, (1<<20)/len(line)+1)[:1<<20])
	copy(body[len(body)/2:], secret)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := io.Copy(io.Discard, r.Reader(bytes.NewReader(body)))
		if err != nil || n < int64(len(body)) {
			b.Fatal(n, err)
		}
	}
}
