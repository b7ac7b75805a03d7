package statestorage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// storageUnderTest is one fresh, empty Storage and the backend under
// it (for looking at and tampering with what is stored).
type storageUnderTest struct {
	s       *Storage
	backend Backend
	clock   *clock
}

// tree is a certmagic-like key layout used by the directory tests.
var tree = []string{
	"certificates/acme/example.com/example.com.crt",
	"certificates/acme/example.com/example.com.key",
	"certificates/acme/example.com/example.com.json",
	"certificates/acme/other.org/other.org.crt",
	"certificates/local/wildcard_.internal/wildcard_.internal.crt",
	"pki/authorities/local/root.crt",
	"pki/authorities/local/root.key",
	"ocsp/example.com-1234",
	"last_clean.json",
	"ab/c", // "a" is not a prefix of "ab/c": prefixes are per component
}

// testContract checks the certmagic.Storage contract on fresh Storages
// made by newStorage: the same checks run over the in-memory fake and
// over the real state database.
func testContract(t *testing.T, newStorage func(t *testing.T) storageUnderTest) {
	ctx := context.Background()

	t.Run("StoreLoad", func(t *testing.T) {
		u := newStorage(t)
		for _, v := range [][]byte{[]byte("first"), {}, {0, 1, 2, 255}, bytes.Repeat([]byte("x"), 100000), []byte("last")} {
			if err := u.s.Store(ctx, "a/b/c.pem", v); err != nil {
				t.Fatal(err)
			}
			got, err := u.s.Load(ctx, "a/b/c.pem")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, v) {
				t.Fatalf("Load gave %d bytes, want the %d stored", len(got), len(v))
			}
		}
		if err := u.s.Store(ctx, "", []byte("x")); err == nil {
			t.Error("Store at the empty key succeeded")
		}
	})

	t.Run("LoadMissing", func(t *testing.T) {
		u := newStorage(t)
		mustStore(t, u.s, "dir/file", "v")
		for _, k := range []string{"nope", "dir", "dir/file/more", "dir/fil"} {
			_, err := u.s.Load(ctx, k)
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load(%q) = %v, want fs.ErrNotExist", k, err)
			}
		}
	})

	t.Run("ValuesSealedAndBoundToKey", func(t *testing.T) {
		u := newStorage(t)
		secret := "-----BEGIN EC PRIVATE KEY----- the CA key"
		mustStore(t, u.s, "pki/authorities/local/root.key", secret)
		mustStore(t, u.s, "pki/authorities/local/other.key", "other")
		raw, _, ok, err := u.backend.StorageGet(ctx, "pki/authorities/local/root.key")
		if err != nil || !ok {
			t.Fatalf("raw value: %v %v", ok, err)
		}
		if bytes.Contains(raw, []byte("PRIVATE KEY")) || bytes.Contains(raw, []byte("CA key")) {
			t.Fatal("the backend holds the value in clear")
		}

		// A value moved to another key does not load there.
		if err := u.backend.StoragePut(ctx, "pki/authorities/local/other.key", raw, time.Now()); err != nil {
			t.Fatal(err)
		}
		_, err = u.s.Load(ctx, "pki/authorities/local/other.key")
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a value moved to another key: Load = %v, want an authentication error (not fs.ErrNotExist)", err)
		}
		if _, err := u.s.Stat(ctx, "pki/authorities/local/other.key"); err == nil {
			t.Error("Stat of a moved value succeeded")
		}

		// A value altered in place does not load.
		for _, i := range []int{0, len(raw) / 2, len(raw) - 1} {
			bad := bytes.Clone(raw)
			bad[i] ^= 1
			if err := u.backend.StoragePut(ctx, "pki/authorities/local/root.key", bad, time.Now()); err != nil {
				t.Fatal(err)
			}
			_, err := u.s.Load(ctx, "pki/authorities/local/root.key")
			if err == nil || errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("byte %d flipped: Load = %v, want an authentication error", i, err)
			}
			if bytes.Contains([]byte(err.Error()), []byte(secret)) {
				t.Fatal("the error shows the value")
			}
		}
		// Truncated, and empty.
		for _, bad := range [][]byte{raw[:len(raw)-1], {}} {
			if err := u.backend.StoragePut(ctx, "pki/authorities/local/root.key", bad, time.Now()); err != nil {
				t.Fatal(err)
			}
			if _, err := u.s.Load(ctx, "pki/authorities/local/root.key"); err == nil || errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%d-byte value: Load = %v, want an authentication error", len(bad), err)
			}
		}
		// The original bytes, back in place, load again.
		if err := u.backend.StoragePut(ctx, "pki/authorities/local/root.key", raw, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := mustLoad(t, u.s, "pki/authorities/local/root.key"); got != secret {
			t.Fatalf("Load = %q", got)
		}
	})

	t.Run("Exists", func(t *testing.T) {
		u := newStorage(t)
		storeTree(t, u.s)
		for k, want := range map[string]bool{
			"certificates": true, "certificates/acme": true, "certificates/acme/": true,
			"certificates/acme/example.com/example.com.crt": true, "last_clean.json": true, "ab": true, "ab/c": true,
			"a": false, "certificate": false, "certificates/acme/example.com/example.com": false, "nope": false,
			"ab/c/d": false,
		} {
			if got := u.s.Exists(ctx, k); got != want {
				t.Errorf("Exists(%q) = %v, want %v", k, got, want)
			}
		}
	})

	t.Run("ListLikeFileStorage", func(t *testing.T) {
		u := newStorage(t)
		storeTree(t, u.s)
		fsStore := &certmagic.FileStorage{Path: t.TempDir()}
		storeTree(t, fsStore)
		for _, p := range []string{"", "certificates", "certificates/", "certificates/acme", "certificates/acme/example.com",
			"pki", "ab", "last_clean.json", "certificates/acme/example.com/example.com.crt"} {
			for _, rec := range []bool{false, true} {
				got, err := u.s.List(ctx, p, rec)
				if err != nil {
					t.Errorf("List(%q, %v): %v", p, rec, err)
					continue
				}
				want, err := fsStore.List(ctx, p, rec)
				if err != nil {
					t.Fatalf("FileStorage.List(%q, %v): %v", p, rec, err)
				}
				slices.Sort(want)
				if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("List(%q, %v) =\n %q\nFileStorage gives\n %q", p, rec, got, want)
				}
			}
		}
		for _, p := range []string{"nope", "certificate", "a", "certificates/acme/example.com/example.com"} {
			for _, rec := range []bool{false, true} {
				if _, err := u.s.List(ctx, p, rec); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("List(%q, %v) = %v, want fs.ErrNotExist", p, rec, err)
				}
				if _, err := fsStore.List(ctx, p, rec); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("FileStorage.List(%q, %v) = %v: the test's expectation is wrong", p, rec, err)
				}
			}
		}
	})

	t.Run("Stat", func(t *testing.T) {
		u := newStorage(t)
		before := u.clock.Now()
		mustStore(t, u.s, "certificates/acme/example.com/example.com.crt", "12345")
		info, err := u.s.Stat(ctx, "certificates/acme/example.com/example.com.crt")
		if err != nil {
			t.Fatal(err)
		}
		if !info.IsTerminal || info.Size != 5 || info.Key != "certificates/acme/example.com/example.com.crt" || info.Modified.Before(before.Truncate(time.Microsecond)) {
			t.Errorf("Stat of a value = %+v", info)
		}
		for _, dir := range []string{"certificates", "certificates/acme/example.com"} {
			info, err := u.s.Stat(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			if info.IsTerminal || info.Key != dir {
				t.Errorf("Stat(%q) = %+v, want a directory", dir, info)
			}
		}
		if _, err := u.s.Stat(ctx, "certificate"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat of a missing key = %v, want fs.ErrNotExist", err)
		}
	})

	t.Run("ModifiedFollowsTheClock", func(t *testing.T) {
		u := newStorage(t)
		mustStore(t, u.s, "k", "1")
		first, err := u.s.Stat(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		u.clock.Advance(time.Hour)
		mustStore(t, u.s, "k", "22")
		second, err := u.s.Stat(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if d := second.Modified.Sub(first.Modified); d < 59*time.Minute || d > 61*time.Minute || second.Size != 2 {
			t.Errorf("after an hour: Modified moved by %v, Size %d", d, second.Size)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		u := newStorage(t)
		storeTree(t, u.s)
		if err := u.s.Delete(ctx, "certificates/acme/example.com/example.com.key"); err != nil {
			t.Fatal(err)
		}
		if u.s.Exists(ctx, "certificates/acme/example.com/example.com.key") || !u.s.Exists(ctx, "certificates/acme/example.com/example.com.crt") {
			t.Error("deleting one value removed the wrong keys")
		}
		if err := u.s.Delete(ctx, "certificates/acme"); err != nil {
			t.Fatal(err)
		}
		if u.s.Exists(ctx, "certificates/acme") || u.s.Exists(ctx, "certificates/acme/other.org/other.org.crt") {
			t.Error("deleting a directory left keys under it")
		}
		if !u.s.Exists(ctx, "certificates/local/wildcard_.internal/wildcard_.internal.crt") {
			t.Error("deleting a directory removed a sibling")
		}
		for _, k := range []string{"certificates/acme", "nope", "a"} { // already gone, never there, a non-component prefix
			if err := u.s.Delete(ctx, k); err != nil {
				t.Errorf("Delete(%q) of a missing key: %v", k, err)
			}
		}
		if !u.s.Exists(ctx, "ab/c") {
			t.Error(`Delete("a") removed "ab/c"`)
		}
	})

	t.Run("ConcurrentUse", func(t *testing.T) {
		u := newStorage(t)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for g := range 8 {
			wg.Go(func() {
				for i := range 8 {
					k := fmt.Sprintf("c/%d/%d", g, i)
					v := []byte(k + " value")
					if err := u.s.Store(ctx, k, v); err != nil {
						errs <- err
						return
					}
					got, err := u.s.Load(ctx, k)
					if err != nil || !bytes.Equal(got, v) {
						errs <- fmt.Errorf("Load(%q) = %q, %v", k, got, err)
						return
					}
					if _, err := u.s.List(ctx, "c", true); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		keys, err := u.s.List(ctx, "c", false)
		if err != nil || len(keys) != 8 {
			t.Errorf("List(c) = %d keys, %v", len(keys), err)
		}
	})
}

func storeTree(t *testing.T, s certmagic.Storage) {
	t.Helper()
	for _, k := range tree {
		mustStore(t, s, k, "value of "+k)
	}
}

func mustStore(t *testing.T, s certmagic.Storage, key, value string) {
	t.Helper()
	if err := s.Store(context.Background(), key, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

func mustLoad(t *testing.T, s certmagic.Storage, key string) string {
	t.Helper()
	v, err := s.Load(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
