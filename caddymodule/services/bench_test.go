package services

import (
	"fmt"
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
		if _, err := RewriteRequest(r, resolveTest); err != nil || auth[0] != "Bearer SECRET2" {
			b.Fatal(auth[0], err)
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
