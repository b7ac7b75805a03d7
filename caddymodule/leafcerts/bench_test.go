package leafcerts_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
)

func benchMinter(b *testing.B, opts leafcerts.Options) *leafcerts.Minter {
	b.Helper()
	ca := newTestCA(b)
	inter := ca.intermediate(b, time.Now().Add(-time.Hour), time.Now().Add(7*24*time.Hour))
	return newMinter(b, newSwappableIssuer(inter).issue, opts)
}

func BenchmarkCertificateHit(b *testing.B) {
	m := benchMinter(b, leafcerts.Options{})
	if _, err := m.Certificate("example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Certificate("example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCertificateHitParallel(b *testing.B) {
	m := benchMinter(b, leafcerts.Options{})
	if _, err := m.Certificate("example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Certificate("example.com"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkCertificateMint(b *testing.B) {
	m := benchMinter(b, leafcerts.Options{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := m.Certificate("h" + strconv.Itoa(i) + ".example"); err != nil {
			b.Fatal(err)
		}
	}
}
