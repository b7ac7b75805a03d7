package sessions

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func counter() NewPlaceholderFunc {
	var n atomic.Int64
	return func() (string, error) { return "ph" + string(rune('a'+n.Add(1))), nil }
}

type closer struct{ closed atomic.Bool }

func (c *closer) Close() error { c.closed.Store(true); return nil }

func TestCreateAuthenticateRevoke(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := NewRegistry()
	r.Now = c.now
	s, tok, err := r.Create([]string{"b", "a"}, time.Hour, []string{"X", "Y", "X"}, counter())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) < 40 {
		t.Fatalf("token %q", tok)
	}
	if got, err := r.Authenticate(tok); err != nil || got != s {
		t.Fatalf("Authenticate = %v, %v", got, err)
	}
	if _, err := r.Authenticate(tok + "x"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("wrong token: %v", err)
	}
	if !s.InScope("a") || s.InScope("c") {
		t.Fatal("scope wrong")
	}
	if len(s.Placeholders()) != 2 {
		t.Fatalf("placeholders %v", s.Placeholders())
	}
	ph, _ := s.Placeholder("X")
	if cred, ok := s.Credential(ph); !ok || cred != "X" {
		t.Fatal("placeholder does not map back")
	}

	conn := &closer{}
	s.Track(conn)
	if !r.Revoke(s.ID) || !conn.closed.Load() {
		t.Fatal("revoke did not close the tracked connection")
	}
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked: %v", err)
	}
	late := &closer{}
	s.Track(late)
	if !late.closed.Load() {
		t.Fatal("tracking on a revoked session must close at once")
	}
	if r.Revoke("nope") {
		t.Fatal("revoked an unknown id")
	}
}

func TestExpiryAndSweep(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r := NewRegistry()
	r.Now = c.now
	s, tok, _ := r.Create([]string{"a"}, time.Minute, nil, counter())
	conn := &closer{}
	s.Track(conn)
	c.t = c.t.Add(time.Minute)
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	if s.Active(c.t) {
		t.Fatal("expired session active")
	}
	if n := r.Sweep(time.Hour); n != 1 || !conn.closed.Load() {
		t.Fatalf("sweep ended %d, closed=%v", n, conn.closed.Load())
	}
	if len(r.List()) != 1 {
		t.Fatal("ended session should stay listed for a while")
	}
	c.t = c.t.Add(time.Hour)
	r.Sweep(time.Hour)
	if len(r.List()) != 0 {
		t.Fatal("old session not forgotten")
	}
	if _, err := r.Authenticate(tok); !errors.Is(err, ErrUnknown) {
		t.Fatalf("forgotten: %v", err)
	}
}

func TestCreateRejectsBadTTL(t *testing.T) {
	if _, _, err := NewRegistry().Create(nil, 0, nil, counter()); err == nil {
		t.Fatal("zero ttl accepted")
	}
}
