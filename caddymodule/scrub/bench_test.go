package scrub

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// BenchmarkRedactorReader is the benchmark the KMP redactor was
// measured with: 1 MiB of JSON-ish text, one raw echo in the middle.
func BenchmarkRedactorReader(b *testing.B) {
	const secret = "sk-proj-0123456789abcdefXYZ"
	r := redactorOf(map[string]string{secret: "agvph_0123456789abcdef0123456789abcdef"})
	// 1 MiB of JSON-ish text with the secret echoed once in the middle.
	line := `{"id":"chatcmpl-123","object":"chat.completion.chunk","choices":[{"delta":{"content":"sk- is a prefix"}}]}` + "\n"
	body := []byte(strings.Repeat(line, (1<<20)/len(line)+1)[:1<<20])
	copy(body[len(body)/2:], secret)
	benchReader(b, r, body)
}

// benchSecrets returns a redactor for n API-key-like secrets with all
// their derived forms, as the proxy builds it. The keys have '+' and
// '/' (as AWS secret keys do), so escapes of those (\/, %20 for '+')
// make the decoding view necessary.
func benchSecrets(n int) (*Redactor, []string) {
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var set SecretSet
	var secrets []string
	for i := range n {
		s := []byte("sk-proj-")
		for range 40 {
			s = append(s, alphabet[rng.IntN(len(alphabet))])
		}
		secrets = append(secrets, string(s))
		set.Add(string(s), fmt.Sprintf("agvph_%032x", i))
	}
	return (&Cache{}).Redactor(&set), secrets
}

// benchBody is 1 MiB of chat-completion-like JSON lines. With sparse
// escapes, every line has one (PHP's \/, which decodes to a byte base64
// patterns have, so the decoding view is built); with dense ones six of
// five kinds (\n, \", \u00e9, %20, &amp;), as model output quoted in
// JSON or HTML has.
func benchBody(escapes string) []byte {
	line := map[string]string{
		"none":   `{"id":"chatcmpl-9x8Y7z","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Sure, here is the plan for the migration"}}]}`,
		"sparse": `{"id":"chatcmpl-9x8Y7z","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Sure, here is the plan for the migration\/"}}]}`,
		"dense":  `{"id":"chatcmpl-9x8Y7z","object":"chat.completion.chunk","created":1718000000,"choices":[{"index":0,"delta":{"content":"Sure,\n here is the \"plan\" caf\u00e9 https://x.example/a%20b?c=1&amp;d=2"}}]}`,
	}[escapes] + "\n"
	return []byte(strings.Repeat(line, (1<<20)/len(line)+1)[:1<<20])
}

func benchReader(b *testing.B, r *Redactor, body []byte) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := io.Copy(io.Discard, r.Reader(bytes.NewReader(body)))
		if err != nil || n == 0 {
			b.Fatal(n, err)
		}
	}
}

// No match: the common case, which must stay above 500 MB/s.
func BenchmarkScanNoMatch(b *testing.B) {
	for _, n := range []int{1, 10} {
		r, _ := benchSecrets(n)
		for _, escapes := range []string{"none", "sparse", "dense"} {
			body := benchBody(escapes)
			name := fmt.Sprintf("secrets=%d/escapes=%s", n, escapes)
			b.Run(name+"/Reader", func(b *testing.B) { benchReader(b, r, body) })
			b.Run(name+"/String", func(b *testing.B) {
				s := string(body)
				b.SetBytes(int64(len(s)))
				b.ReportAllocs()
				for b.Loop() {
					if out := r.String(s); len(out) != len(s) {
						b.Fatal("changed")
					}
				}
			})
		}
	}
}

// With matches: 10 secrets, one echoed about every 4 KiB, raw, URL- or
// JSON-escaped, or base64.
func BenchmarkScanWithMatches(b *testing.B) {
	r, secrets := benchSecrets(10)
	body := benchBody("sparse")
	for i, at := 0, 2000; at+200 < len(body); i, at = i+1, at+4096 {
		s := secrets[i%len(secrets)]
		form := [...]string{s, url.QueryEscape(s), strings.ReplaceAll(s, "-", `\u002d`), base64.StdEncoding.EncodeToString([]byte(s))}[i%4]
		copy(body[at:], form)
	}
	benchReader(b, r, body)
}

// BenchmarkCacheNewSession is the first response of a new session: the
// same secrets as other sessions, its own placeholders.
func BenchmarkCacheNewSession(b *testing.B) {
	var c Cache
	secrets := []string{"sk-proj-0123456789abcdef+/XYZ0123456789", "ghp_0123456789abcdefABCDEF0123456789ab", "xoxb-1234-5678-abcdefABCDEF0123456789"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		var s SecretSet
		for j, v := range secrets {
			s.Add(v, fmt.Sprintf("agvph_%032x", i*8+j))
		}
		if c.Redactor(&s) == nil {
			b.Fatal("no redactor")
		}
	}
}
