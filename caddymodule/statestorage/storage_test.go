package statestorage

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fastLocks make lock waits and keep-alives quick in real time; lock
// expiry itself is driven by the fake clock.
func fastLocks(c *clock) Options {
	return Options{Now: c.Now, LockTTL: time.Minute, RefreshInterval: 2 * time.Millisecond, PollMin: time.Millisecond, PollMax: 4 * time.Millisecond}
}

// newFakePair returns two Storages — two brokers — over one fake
// backend and one clock.
func newFakePair(t *testing.T) (a, b *Storage, f *fakeBackend, c *clock) {
	c = newClock()
	f = newFakeBackend(c)
	sealer := newGCMSealer()
	return New(f, sealer, fastLocks(c)), New(f, sealer, fastLocks(c)), f, c
}

func TestContractFake(t *testing.T) {
	testContract(t, func(t *testing.T) storageUnderTest {
		c := newClock()
		f := newFakeBackend(c)
		return storageUnderTest{s: New(f, newGCMSealer(), fastLocks(c)), backend: f, clock: c}
	})
}

func TestBackendErrorsNameTheStorage(t *testing.T) {
	a, _, f, _ := newFakePair(t)
	ctx := context.Background()
	mustStore(t, a, "k", "v")
	f.setFail(errors.New("connection refused"))
	_, loadErr := a.Load(ctx, "k")
	_, listErr := a.List(ctx, "", true)
	_, statErr := a.Stat(ctx, "k")
	_, tryErr := a.TryLock(ctx, "l")
	for name, err := range map[string]error{
		"Store": a.Store(ctx, "k", []byte("v")), "Load": loadErr, "Delete": a.Delete(ctx, "k"),
		"List": listErr, "Stat": statErr, "Lock": a.Lock(ctx, "l"), "TryLock": tryErr,
	} {
		if err == nil || !strings.HasPrefix(err.Error(), "agent_vault_state storage: ") || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s with the backend down: %v", name, err)
		}
		if errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s with the backend down reads as fs.ErrNotExist: the PKI app would make a new CA", name)
		}
	}
	if a.Exists(ctx, "k") {
		t.Error("Exists with the backend down = true")
	}
}

func TestValuesFromAnotherSealerDoNotLoad(t *testing.T) {
	c := newClock()
	f := newFakeBackend(c)
	mustStore(t, New(f, newGCMSealer(), fastLocks(c)), "pki/authorities/local/root.key", "key")
	_, err := New(f, newGCMSealer(), fastLocks(c)).Load(context.Background(), "pki/authorities/local/root.key")
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load under another key = %v, want an authentication error", err)
	}
}

// lockInBackground starts s.Lock(ctx, name) and returns a channel that
// receives its result.
func lockInBackground(ctx context.Context, s *Storage, name string) <-chan error {
	got := make(chan error, 1)
	go func() { got <- s.Lock(ctx, name) }()
	return got
}

// assertWaiting checks that the Lock behind got is still waiting after
// it has polled the backend a few more times.
func assertWaiting(t *testing.T, f *fakeBackend, name string, got <-chan error) {
	t.Helper()
	seen := f.attemptsOf(name)
	waitFor(t, "more lock attempts", func() bool { return f.attemptsOf(name) >= seen+3 })
	select {
	case err := <-got:
		t.Fatalf("Lock returned (%v) while the lock was held elsewhere", err)
	default:
	}
}

func receive(t *testing.T, what string, got <-chan error) error {
	t.Helper()
	select {
	case err := <-got:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

func TestLockContentionBetweenBrokers(t *testing.T) {
	a, b, f, _ := newFakePair(t)
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	got := lockInBackground(ctx, b, "issue_cert_example.com")
	assertWaiting(t, f, "issue_cert_example.com", got)
	if ok, err := b.TryLock(ctx, "issue_cert_example.com"); ok || err != nil {
		t.Fatalf("TryLock of a held lock = %v, %v", ok, err)
	}
	if err := a.Unlock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	if err := receive(t, "B's Lock after A's Unlock", got); err != nil {
		t.Fatal(err)
	}
	// A now waits for B in turn.
	got = lockInBackground(ctx, a, "issue_cert_example.com")
	assertWaiting(t, f, "issue_cert_example.com", got)
	if err := b.Unlock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	if err := receive(t, "A's Lock after B's Unlock", got); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, "issue_cert_example.com"); err != nil {
		t.Fatal(err)
	}
	if _, held := f.lock("issue_cert_example.com"); held {
		t.Error("the lock is still in the backend after the last Unlock")
	}
}

func TestLockOfACrashedBrokerExpires(t *testing.T) {
	_, b, f, c := newFakePair(t)
	ctx := context.Background()
	// A broker took the lock and died: nothing refreshes it any more.
	if ok, err := f.TryLock(ctx, "pki", "crashed-broker", time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	got := lockInBackground(ctx, b, "pki")
	assertWaiting(t, f, "pki", got)
	c.Advance(time.Minute + time.Second)
	if err := receive(t, "Lock after the dead holder's lease ran out", got); err != nil {
		t.Fatal(err)
	}
	if l, _ := f.lock("pki"); l.owner == "crashed-broker" {
		t.Fatal("the lock still belongs to the crashed broker")
	}
	if err := b.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
}

func TestHeldLockIsKeptAlive(t *testing.T) {
	a, b, f, c := newFakePair(t)
	ctx := context.Background()
	if err := a.Lock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
	first, _ := f.lock("pki")
	c.Advance(40 * time.Second)
	waitFor(t, "a refresh", func() bool {
		l, _ := f.lock("pki")
		return l.expires.After(first.expires)
	})
	// Past the first lease, still within the refreshed one.
	c.Advance(30 * time.Second)
	if ok, err := b.TryLock(ctx, "pki"); ok || err != nil {
		t.Fatalf("another broker took a lock that is being kept alive: %v, %v", ok, err)
	}
	if err := a.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
	// No refresh lands after Unlock: the lock stays free.
	if ok, err := b.TryLock(ctx, "pki"); !ok || err != nil {
		t.Fatalf("TryLock after Unlock = %v, %v", ok, err)
	}
	if err := b.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
}

func TestLostLockStopsItsKeepAlive(t *testing.T) {
	a, b, f, c := newFakePair(t)
	ctx := context.Background()
	if err := a.Lock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	keepAlive := a.held["pki"]
	a.mu.Unlock()
	// A cannot reach the database for longer than the lease: B takes
	// the lock over, and A's keep-alive must not take it back.
	f.failOwners(a.owners.prefix, errors.New("network down"))
	c.Advance(2 * time.Minute)
	if ok, err := b.TryLock(ctx, "pki"); !ok || err != nil {
		t.Fatalf("TryLock of an expired lock = %v, %v", ok, err)
	}
	f.failOwners("", nil)
	select {
	case <-keepAlive.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the keep-alive of a lost lock is still running")
	}
	l, _ := f.lock("pki")
	if !strings.HasPrefix(l.owner, b.owners.prefix) {
		t.Fatal("the broker that lost the lock took it back")
	}
	if err := a.Unlock(ctx, "pki"); err != nil { // releases nothing of B's
		t.Fatal(err)
	}
	if l2, held := f.lock("pki"); !held || l2.owner != l.owner {
		t.Fatal("A's Unlock released B's lock")
	}
	if err := b.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
}

func TestLockWaitEndsWithContext(t *testing.T) {
	a, b, f, _ := newFakePair(t)
	if err := a.Lock(context.Background(), "pki"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := lockInBackground(ctx, b, "pki")
	assertWaiting(t, f, "pki", got)
	cancel()
	err := receive(t, "Lock to give up", got)
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "agent_vault_state storage: ") {
		t.Fatalf("Lock after cancel = %v, want context.Canceled", err)
	}
	if err := b.Unlock(context.Background(), "pki"); err == nil {
		t.Error("Unlock of a lock never obtained succeeded")
	}
	if l, _ := f.lock("pki"); !strings.HasPrefix(l.owner, a.owners.prefix) {
		t.Fatalf("the lock moved to %q", l.owner)
	}
	if err := a.Unlock(context.Background(), "pki"); err != nil {
		t.Fatal(err)
	}
}

func TestUnlockWorksWithADoneContext(t *testing.T) {
	a, _, f, _ := newFakePair(t)
	if err := a.Lock(context.Background(), "pki"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
	if _, held := f.lock("pki"); held {
		t.Fatal("Unlock with a cancelled context left the lock behind")
	}
	if err := a.Unlock(context.Background(), "pki"); err == nil {
		t.Error("a second Unlock succeeded")
	}
}

// TestLockExcludes runs goroutines of two brokers through one critical
// section: never two inside at once, including two goroutines of the
// same broker.
func TestLockExcludes(t *testing.T) {
	a, b, _, _ := newFakePair(t)
	ctx := context.Background()
	var inside, entered atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for _, s := range []*Storage{a, b, a, b} {
		wg.Go(func() {
			for range 10 {
				if err := s.Lock(ctx, "critical"); err != nil {
					errs <- err
					return
				}
				if n := inside.Add(1); n != 1 {
					errs <- errors.New("two holders inside the critical section")
				}
				entered.Add(1)
				inside.Add(-1)
				if err := s.Unlock(ctx, "critical"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if entered.Load() != 40 {
		t.Fatalf("%d entries, want 40", entered.Load())
	}
}

func TestTryLockErrorReleasesWhatItMayHaveTaken(t *testing.T) {
	_, b, f, _ := newFakePair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := b.TryLock(ctx, "pki"); ok || err == nil {
		t.Fatalf("TryLock with a cancelled context = %v, %v", ok, err)
	}
	if _, held := f.lock("pki"); held {
		t.Fatal("a failed TryLock left a lock behind")
	}
}

// TestUnlockOfALostLockKeepsTheNextHolders: A's lock expires while held
// (its refreshes fail) and B takes and frees it. Another goroutine of A
// asking for it must not get a second hold on the name: certmagic's
// Unlock names only the lock, so the first holder's Unlock would
// release the second's, and B could then take a lock A still holds.
func TestUnlockOfALostLockKeepsTheNextHolders(t *testing.T) {
	a, b, f, c := newFakePair(t)
	ctx := context.Background()
	if err := a.Lock(ctx, "pki"); err != nil { // A's first goroutine
		t.Fatal(err)
	}
	f.failOwners(a.owners.prefix, errors.New("network down"))
	c.Advance(2 * time.Minute)
	if ok, err := b.TryLock(ctx, "pki"); !ok || err != nil {
		t.Fatalf("TryLock of the expired lock = %v, %v", ok, err)
	}
	f.failOwners("", nil)
	if err := b.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
	second, err := a.TryLock(ctx, "pki") // A's second goroutine
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Unlock(ctx, "pki") // the first goroutine is done
	if !second {
		// The name was still the first holder's here; it is free now.
		if second, err = a.TryLock(ctx, "pki"); !second || err != nil {
			t.Fatalf("TryLock after the first holder's Unlock = %v, %v", second, err)
		}
	}
	if ok, err := b.TryLock(ctx, "pki"); ok || err != nil {
		t.Fatalf("B took the lock A's second goroutine holds: %v, %v", ok, err)
	}
	if err := a.Unlock(ctx, "pki"); err != nil {
		t.Fatal(err)
	}
	if _, held := f.lock("pki"); held {
		t.Fatal("the lock is left behind")
	}
}
