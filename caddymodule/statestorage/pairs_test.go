package statestorage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

func TestCAPair(t *testing.T) {
	for k, want := range map[string]struct {
		lock         string
		isCert, pair bool
	}{
		"pki/authorities/local/root.crt":               {"agent_vault_state/ca_pair/local/root", true, true},
		"pki/authorities/local/root.key":               {"agent_vault_state/ca_pair/local/root", false, true},
		"pki/authorities/agent_vault/intermediate.crt": {"agent_vault_state/ca_pair/agent_vault/intermediate", true, true},
		"pki/authorities/agent_vault/intermediate.key": {"agent_vault_state/ca_pair/agent_vault/intermediate", false, true},
		"pki/authorities/local/other.crt":              {},
		"pki/authorities/local/root.pem":               {},
		"pki/authorities//root.crt":                    {},
		"pki/authorities/root.crt":                     {},
		"certificates/local/root.crt":                  {},
		"pki/authorities/local/sub/root.crt":           {},
	} {
		lock, isCert, pair := caPair(k)
		if lock != want.lock || isCert != want.isCert || pair != want.pair {
			t.Errorf("caPair(%q) = %q %v %v, want %+v", k, lock, isCert, pair, want)
		}
	}
}

// loadOrGen does what Caddy's PKI app does with a CA pair: load the
// certificate and then the key, or generate both and store the
// certificate, then the key, when the certificate is missing.
func loadOrGen(ctx context.Context, s *Storage, ca, me string) (cert, key string, err error) {
	prefix := "pki/authorities/" + ca + "/root"
	c, err := s.Load(ctx, prefix+".crt")
	if errors.Is(err, fs.ErrNotExist) {
		cert, key = "cert of "+me, "key of "+me
		if err := s.Store(ctx, prefix+".crt", []byte(cert)); err != nil {
			return "", "", err
		}
		return cert, key, s.Store(ctx, prefix+".key", []byte(key))
	}
	if err != nil {
		return "", "", err
	}
	k, err := s.Load(ctx, prefix+".key")
	return string(c), string(k), err
}

// TestBrokersStartingTogetherShareOneCA starts two brokers on an empty
// storage at the same moment: they must end up with one CA, stored as
// a matching pair. The answer to the first broker's read of the
// certificate is held until the second broker has either read it too (both would find it
// missing and generate a CA each) or been made to wait for the pair's
// lock, so the test sees the race whenever the storage lets it happen.
func TestBrokersStartingTogetherShareOneCA(t *testing.T) {
	ctx := context.Background()
	for round := range 10 {
		a, b, f, _ := newFakePair(t)
		var once sync.Once
		secondArrived := make(chan struct{})
		arrive := func() { once.Do(func() { close(secondArrived) }) }
		var gets sync.Mutex
		crtGets := 0
		f.afterGet = func(key string) {
			if key != "pki/authorities/local/root.crt" {
				return
			}
			gets.Lock()
			crtGets++
			first := crtGets == 1
			gets.Unlock()
			if first {
				<-secondArrived
			} else {
				arrive()
			}
		}
		f.afterTryLock = func(name string, ok bool) {
			if name == "agent_vault_state/ca_pair/local/root" && !ok {
				arrive()
			}
		}
		start := make(chan struct{})
		type result struct{ cert, key string }
		results := make([]result, 2)
		var wg sync.WaitGroup
		for i, s := range []*Storage{a, b} {
			wg.Go(func() {
				<-start
				cert, key, err := loadOrGen(ctx, s, "local", fmt.Sprint("broker ", i))
				if err != nil {
					t.Error(err)
				}
				results[i] = result{cert, key}
			})
		}
		close(start)
		wg.Wait()
		if results[0] != results[1] {
			t.Fatalf("round %d: the brokers use different CAs: %+v", round, results)
		}
		cert, key := mustLoad(t, a, "pki/authorities/local/root.crt"), mustLoad(t, a, "pki/authorities/local/root.key")
		if cert[len("cert of "):] != key[len("key of "):] || cert != results[0].cert {
			t.Fatalf("round %d: stored pair %q / %q, brokers use %+v", round, cert, key, results[0])
		}
		if _, held := f.lock("agent_vault_state/ca_pair/local/root"); held {
			t.Fatalf("round %d: the pair lock is left behind", round)
		}
	}
}

// TestPairWritesDoNotInterleave renews one CA's intermediate from two
// brokers at once: the second broker's certificate waits until the
// first's key is stored, so the stored pair always matches.
func TestPairWritesDoNotInterleave(t *testing.T) {
	a, b, f, _ := newFakePair(t)
	ctx := context.Background()
	const crt, key = "pki/authorities/local/intermediate.crt", "pki/authorities/local/intermediate.key"
	mustStore(t, a, crt, "A")
	got := make(chan error, 1)
	go func() {
		if err := b.Store(ctx, crt, []byte("B")); err != nil {
			got <- err
			return
		}
		got <- b.Store(ctx, key, []byte("B"))
	}()
	assertWaiting(t, f, "agent_vault_state/ca_pair/local/intermediate", got)
	// Read past the storage: a Load through A would itself wait for
	// A's open unit.
	raw, _ := f.raw(crt)
	if v, err := a.sealer.Open(raw, additionalData(crt)); err != nil || string(v) != "A" {
		t.Fatalf("B's certificate landed while A's pair was half written: %q %v", v, err)
	}
	mustStore(t, a, key, "A")
	if err := receive(t, "B's pair", got); err != nil {
		t.Fatal(err)
	}
	if c, k := mustLoad(t, a, crt), mustLoad(t, a, key); c != "B" || k != "B" {
		t.Fatalf("stored pair %q / %q", c, k)
	}
	if _, held := f.lock("agent_vault_state/ca_pair/local/intermediate"); held {
		t.Fatal("the pair lock is still held")
	}
}

// TestPairLeaseEndsByItself covers a unit of work left half done: the
// certificate was loaded but its key never was.
func TestPairLeaseEndsByItself(t *testing.T) {
	c := newClock()
	f := newFakeBackend(c)
	opts := fastLocks(c)
	opts.PairLease = 5 * time.Millisecond
	a := New(f, newGCMSealer(), opts)
	b := New(f, a.sealer, opts)
	mustStore(t, a, "pki/authorities/local/root.crt", "cert")
	mustStore(t, a, "pki/authorities/local/root.key", "key")
	if _, held := f.lock("agent_vault_state/ca_pair/local/root"); held {
		t.Fatal("a complete pair write left its lock")
	}
	if v := mustLoad(t, a, "pki/authorities/local/root.crt"); v != "cert" {
		t.Fatal(v)
	}
	// A never loads the key; B still gets the CA once A's lease ends.
	if v := mustLoad(t, b, "pki/authorities/local/root.crt"); v != "cert" {
		t.Fatal(v)
	}
	if v := mustLoad(t, b, "pki/authorities/local/root.key"); v != "key" {
		t.Fatal(v)
	}
	waitFor(t, "the pair lock to be free", func() bool {
		_, held := f.lock("agent_vault_state/ca_pair/local/root")
		return !held
	})
}

// TestRootIsNeverReplaced: a CA root already stored (by another broker
// that got there while this one's pair lock was lost) is not
// overwritten, neither its certificate nor its key; the same value
// stored again (a retry) is fine, and the intermediate is still
// renewed in place.
func TestRootIsNeverReplaced(t *testing.T) {
	for _, backend := range []struct {
		name string
		new  func(t *testing.T) (a, b *Storage)
	}{
		{"fake", func(t *testing.T) (a, b *Storage) {
			a, b, _, _ = newFakePair(t)
			return a, b
		}},
		{"sqlite", func(t *testing.T) (a, b *Storage) {
			path := filepath.Join(t.TempDir(), "state.db")
			sealer := newGCMSealer()
			return New(openSQLite(t, path), sealer, Options{}), New(openSQLite(t, path), sealer, Options{})
		}},
	} {
		t.Run(backend.name, func(t *testing.T) {
			a, b := backend.new(t)
			ctx := context.Background()
			const crt, key = "pki/authorities/local/root.crt", "pki/authorities/local/root.key"
			mustStore(t, a, crt, "A")
			mustStore(t, a, key, "A")
			for _, k := range []string{crt, key} {
				if err := b.Store(ctx, k, []byte("B")); err == nil || !strings.Contains(err.Error(), "never replaced") {
					t.Fatalf("replacing %s: %v", k, err)
				}
			}
			if c, k := mustLoad(t, b, crt), mustLoad(t, b, key); c != "A" || k != "A" {
				t.Fatalf("the root is now %q / %q", c, k)
			}
			mustStore(t, b, crt, "A") // a retry of the same root
			mustStore(t, b, key, "A")
			for _, v := range []string{"A", "B"} {
				mustStore(t, a, "pki/authorities/local/intermediate.crt", v)
				mustStore(t, a, "pki/authorities/local/intermediate.key", v)
			}
			if v := mustLoad(t, b, "pki/authorities/local/intermediate.key"); v != "B" {
				t.Fatalf("intermediate key %q", v)
			}
			for _, name := range []string{"agent_vault_state/ca_pair/local/root", "agent_vault_state/ca_pair/local/intermediate"} {
				if ok, err := b.TryLock(ctx, name); !ok || err != nil {
					t.Fatalf("%s left held: %v %v", name, ok, err)
				}
				if err := b.Unlock(ctx, name); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// openSQLite opens a state database file, one broker's handle on it.
func openSQLite(t *testing.T, path string) *state.DB {
	t.Helper()
	db, err := state.Open(context.Background(), state.Config{Backend: state.BackendSQLite, DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestPairUnitsOfOneStorageDoNotMix: one Storage serves every goroutine
// of a process. While one goroutine renews the intermediate (Store of
// the certificate, then of the key), another's Load of the pair (a
// config reload provisioning the PKI app) must wait for the renewal to
// end rather than read the new certificate with the old key, and must
// not end the renewal's unit, which would free the cluster's pair lock
// before the new key is stored.
func TestPairUnitsOfOneStorageDoNotMix(t *testing.T) {
	s, other, f, _ := newFakePair(t)
	ctx := context.Background()
	const crt, key = "pki/authorities/local/intermediate.crt", "pki/authorities/local/intermediate.key"
	const lock = "agent_vault_state/ca_pair/local/intermediate"
	mustStore(t, s, crt, "OLD")
	mustStore(t, s, key, "OLD")

	mustStore(t, s, crt, "NEW") // the renewal's unit begins
	type pair struct {
		crt, key string
		err      error
	}
	loaded := make(chan pair, 1)
	waitsBefore := s.waits.Load()
	go func() {
		c, err := s.Load(ctx, crt)
		if err != nil {
			loaded <- pair{err: err}
			return
		}
		k, err := s.Load(ctx, key)
		loaded <- pair{string(c), string(k), err}
	}()
	waitFor(t, "the second Load to wait or return", func() bool { return s.waits.Load() > waitsBefore || len(loaded) > 0 })
	select {
	case p := <-loaded:
		t.Fatalf("the Load did not wait for the open unit: it read %+v", p)
	default:
	}
	if ok, err := other.TryLock(ctx, lock); ok || err != nil {
		t.Fatalf("the pair lock is free again in the middle of the renewal: %v %v", ok, err)
	}
	mustStore(t, s, key, "NEW") // the renewal's unit ends
	select {
	case p := <-loaded:
		if p != (pair{"NEW", "NEW", nil}) {
			t.Fatalf("loaded %+v, want the renewed pair", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Load still waits after the renewal ended")
	}
	waitFor(t, "the pair lock to be free", func() bool {
		_, held := f.lock(lock)
		return !held
	})
}
