package services

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

func BenchmarkRewriteRequestNoPlaceholder(b *testing.B) {
	r := typicalRequest(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := RewriteRequest(r, resolveTest); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRewriteRequestOnePlaceholder(b *testing.B) {
	r := typicalRequest(b)
	r.Header.Set("Authorization", "Bearer "+ph2)
	auth := r.Header["Authorization"]
	b.ReportAllocs()
	for b.Loop() {
		auth[0] = "Bearer " + ph2 // constant: no allocation
		if used, err := RewriteRequest(r, resolveTest); err != nil || len(used) != 1 {
			b.Fatal(used, err)
		}
	}
}

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

func BenchmarkTableLookup(b *testing.B) {
	var svcs []Service
	for i := 0; i < 100; i++ {
		host := ""
		switch i % 4 {
		case 0:
			host = fmt.Sprintf("api%d.example.com", i)
		case 1:
			host = fmt.Sprintf("*.svc%d.example.net", i)
		case 2:
			host = fmt.Sprintf("api%d.example.com/v1/*", i-2)
		case 3:
			host = fmt.Sprintf("api%d.example.com:8443", i-3)
		}
		svcs = append(svcs, Service{Name: fmt.Sprintf("svc-%03d", i), Host: host, Auth: Auth{Type: "bearer", Token: "TOKEN"}})
	}
	tab := mustTable(b, svcs...)
	inScope := func(string) bool { return true }
	for _, bc := range []struct{ name, host, path string }{
		{"exact-path", "api48.example.com", "/v1/chat/completions"},
		{"wildcard", "a.b.svc49.example.net", "/"},
		{"miss", "unknown.example.org", "/"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, ok := tab.Lookup(bc.host, 443, true, bc.path, inScope)
				if ok == (bc.name == "miss") {
					b.Fatal("unexpected result")
				}
			}
		})
	}
}
