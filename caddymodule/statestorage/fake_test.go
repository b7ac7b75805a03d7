package statestorage

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"
)

// clock is a settable time source shared by a fake backend (it is the
// fake database's clock, which decides lock expiry) and the Storages
// over it, so lock expiry can be driven without waiting.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fakeValue struct {
	value    []byte
	modified time.Time
}

type fakeLock struct {
	owner   string
	expires time.Time
}

// fakeBackend is an in-memory Backend with the state API's semantics.
type fakeBackend struct {
	clock *clock

	mu       sync.Mutex
	values   map[string]fakeValue
	locks    map[string]fakeLock
	attempts map[string]int // TryLock calls per lock name
	fail     error          // when set, every call fails with it
	failFor  string         // lock calls of owners with this prefix fail with failLock
	failLock error

	// Hooks run outside the mutex, after StorageGet reads and after
	// TryLock decides; set them before the backend is shared.
	afterGet     func(key string)
	afterTryLock func(name string, ok bool)
}

func newFakeBackend(c *clock) *fakeBackend {
	return &fakeBackend{clock: c, values: map[string]fakeValue{}, locks: map[string]fakeLock{}, attempts: map[string]int{}}
}

func under(key, prefix string) bool {
	return prefix == "" || key == prefix || strings.HasPrefix(key, prefix+"/")
}

func (f *fakeBackend) StoragePut(ctx context.Context, key string, value []byte, modified time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.values[key] = fakeValue{value: bytes.Clone(value), modified: modified}
	return nil
}

func (f *fakeBackend) StorageCreate(ctx context.Context, key string, value []byte, modified time.Time) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return false, f.fail
	}
	if _, ok := f.values[key]; ok {
		return false, nil
	}
	f.values[key] = fakeValue{value: bytes.Clone(value), modified: modified}
	return true, nil
}

func (f *fakeBackend) StorageGet(ctx context.Context, key string) ([]byte, time.Time, bool, error) {
	if f.afterGet != nil {
		defer f.afterGet(key)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, time.Time{}, false, f.fail
	}
	v, ok := f.values[key]
	return bytes.Clone(v.value), v.modified, ok, nil
}

func (f *fakeBackend) StorageDelete(ctx context.Context, key string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return false, f.fail
	}
	deleted := false
	for k := range f.values {
		if k == key || strings.HasPrefix(k, key+"/") {
			delete(f.values, k)
			deleted = true
		}
	}
	return deleted, nil
}

func (f *fakeBackend) StorageList(ctx context.Context, prefix string) ([]Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var out []Entry
	for k, v := range f.values {
		if under(k, prefix) {
			out = append(out, Entry{Key: k, Modified: v.modified, Size: int64(len(v.value))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (f *fakeBackend) TryLock(ctx context.Context, name, owner string, ttl time.Duration) (ok bool, err error) {
	if f.afterTryLock != nil {
		defer func() { f.afterTryLock(name, ok) }()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts[name]++
	if err := f.ownerFails(owner); err != nil {
		return false, err
	}
	if f.fail != nil {
		return false, f.fail
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	l, held := f.locks[name]
	if held && l.owner != owner && l.expires.After(f.clock.Now()) {
		return false, nil
	}
	f.locks[name] = fakeLock{owner: owner, expires: f.clock.Now().Add(ttl)}
	return true, nil
}

func (f *fakeBackend) RefreshLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ownerFails(owner); err != nil {
		return false, err
	}
	if f.fail != nil {
		return false, f.fail
	}
	l, held := f.locks[name]
	if !held || l.owner != owner {
		return false, nil
	}
	f.locks[name] = fakeLock{owner: owner, expires: f.clock.Now().Add(ttl)}
	return true, nil
}

func (f *fakeBackend) Unlock(ctx context.Context, name, owner string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ownerFails(owner); err != nil {
		return err
	}
	if f.fail != nil {
		return f.fail
	}
	if l, held := f.locks[name]; held && l.owner == owner {
		delete(f.locks, name)
	}
	return nil
}

func (f *fakeBackend) lock(name string) (fakeLock, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.locks[name]
	return l, ok
}

func (f *fakeBackend) attemptsOf(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[name]
}

// failOwners makes the lock calls of owners starting with prefix fail
// with err (one broker cut off from the database); "" ends it.
func (f *fakeBackend) failOwners(prefix string, err error) {
	f.mu.Lock()
	f.failFor, f.failLock = prefix, err
	f.mu.Unlock()
}

func (f *fakeBackend) ownerFails(owner string) error {
	if f.failFor != "" && strings.HasPrefix(owner, f.failFor) {
		return f.failLock
	}
	return nil
}

func (f *fakeBackend) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

func (f *fakeBackend) raw(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.values[key]
	return bytes.Clone(v.value), ok
}

func (f *fakeBackend) setRaw(key string, value []byte) {
	f.mu.Lock()
	f.values[key] = fakeValue{value: bytes.Clone(value), modified: f.clock.Now()}
	f.mu.Unlock()
}

// gcmSealer is a test Sealer: AES-256-GCM, nonce first.
type gcmSealer struct{ aead cipher.AEAD }

func newGCMSealer() *gcmSealer {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &gcmSealer{aead: aead}
}

func (g *gcmSealer) Seal(plaintext, ad []byte) []byte {
	nonce := make([]byte, g.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return g.aead.Seal(nonce, nonce, plaintext, ad)
}

func (g *gcmSealer) Open(sealed, ad []byte) ([]byte, error) {
	n := g.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed value too short")
	}
	return g.aead.Open(nil, sealed[:n], sealed[n:], ad)
}
