package sealbox

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var cheap = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func mustDerive(t *testing.T, pw string, salt []byte) *Box {
	t.Helper()
	b, err := Derive([]byte(pw), salt, cheap, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpenRoundTrip(t *testing.T) {
	salt := Random(SaltLen)
	b := mustDerive(t, "pw", salt)
	n1, c1 := b.Seal([]byte("secret"), []byte("ad"))
	n2, c2 := b.Seal([]byte("secret"), []byte("ad"))
	if len(n1) != NonceLen || bytes.Equal(n1, n2) || bytes.Equal(c1, c2) {
		t.Fatal("two seals of the same value must use fresh nonces")
	}
	if bytes.Contains(c1, []byte("secret")) {
		t.Fatal("ciphertext holds the plaintext")
	}
	got, err := b.Open(n1, c1, []byte("ad"))
	if err != nil || string(got) != "secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// The same password and salt give the same key.
	if got, err := mustDerive(t, "pw", salt).Open(n2, c2, []byte("ad")); err != nil || string(got) != "secret" {
		t.Fatalf("re-derived Open = %q, %v", got, err)
	}
	joined := b.SealJoined([]byte("v"), nil)
	if got, err := b.OpenJoined(joined, nil); err != nil || string(got) != "v" {
		t.Fatalf("OpenJoined = %q, %v", got, err)
	}
}

func TestOpenRefusesEverythingElse(t *testing.T) {
	salt := Random(SaltLen)
	b := mustDerive(t, "pw", salt)
	nonce, ct := b.Seal([]byte("secret"), []byte("ad"))
	flip := func(p []byte) []byte { q := bytes.Clone(p); q[len(q)/2] ^= 1; return q }
	cases := map[string]func() ([]byte, error){
		"wrong password": func() ([]byte, error) { return mustDerive(t, "other", salt).Open(nonce, ct, []byte("ad")) },
		"wrong salt":     func() ([]byte, error) { return mustDerive(t, "pw", Random(SaltLen)).Open(nonce, ct, []byte("ad")) },
		"other ad":       func() ([]byte, error) { return b.Open(nonce, ct, []byte("ae")) },
		"flipped nonce":  func() ([]byte, error) { return b.Open(flip(nonce), ct, []byte("ad")) },
		"flipped ct":     func() ([]byte, error) { return b.Open(nonce, flip(ct), []byte("ad")) },
		"short nonce":    func() ([]byte, error) { return b.Open(nonce[:4], ct, []byte("ad")) },
		"short ct":       func() ([]byte, error) { return b.Open(nonce, ct[:3], []byte("ad")) },
		"short joined":   func() ([]byte, error) { return b.OpenJoined([]byte("x"), nil) },
	}
	for name, open := range cases {
		if got, err := open(); !errors.Is(err, ErrOpen) || got != nil {
			t.Errorf("%s: Open = %q, %v; want ErrOpen", name, got, err)
		}
	}
}

func TestDeriveChecksParameters(t *testing.T) {
	small := Limits{MaxTime: 2, MaxMemoryKiB: 256}
	for _, tc := range []struct {
		p    KDFParams
		want string
	}{
		{KDFParams{Time: 0, MemoryKiB: 64, Threads: 1}, "time must be at least 1"},
		{KDFParams{Time: 3, MemoryKiB: 64, Threads: 1}, "time 3 is above the limit of 2"},
		{KDFParams{Time: 1, MemoryKiB: 64, Threads: 0}, "threads must be at least 1"},
		{KDFParams{Time: 1, MemoryKiB: 15, Threads: 2}, "below the minimum"},
		{KDFParams{Time: 1, MemoryKiB: 257, Threads: 1}, "above the limit of 256 KiB"},
	} {
		if _, err := Derive([]byte("pw"), Random(SaltLen), tc.p, small); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.p, err, tc.want)
		}
	}
	if _, err := Derive([]byte("pw"), Random(4), cheap, DefaultLimits); err == nil || !strings.Contains(err.Error(), "salt is 4 bytes") {
		t.Errorf("short salt: %v", err)
	}
	if _, err := Derive(nil, Random(SaltLen), cheap, DefaultLimits); err == nil {
		t.Error("empty password accepted")
	}
}
