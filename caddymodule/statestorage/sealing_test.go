package statestorage

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/caddy-agent-vault/internal/sealbox"
)

func init() {
	// Tests derive many keys; the cost is recorded per record, so a
	// cheap one here changes nothing of what is tested.
	defaultKDF = sealbox.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
}

// fakeMeta is an in-memory MetaStore with the state database's
// semantics: ClaimMeta inserts only where there is no row.
type fakeMeta struct {
	mu        sync.Mutex
	rows      map[string]string
	afterRead func(key string, found bool)
}

func newFakeMeta() *fakeMeta { return &fakeMeta{rows: map[string]string{}} }

func (m *fakeMeta) Meta(ctx context.Context, key string) (string, bool, error) {
	m.mu.Lock()
	v, ok := m.rows[key]
	m.mu.Unlock()
	if m.afterRead != nil {
		m.afterRead(key, ok)
	}
	return v, ok, nil
}

func (m *fakeMeta) ClaimMeta(ctx context.Context, key, value string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.rows[key]; ok {
		return v, nil
	}
	m.rows[key] = value
	return value, nil
}

// TestRecordIsNeverOverwritten: broker Y holds the creation lock and
// has found no record, but broker X writes one all the same (X's lock
// was on a backend that failed to exclude Y: a stolen or expired
// lock). Y must keep X's record, not replace it with its own salt, and
// seal with X's key: X has already read its record back and seals CA
// values with it.
func TestRecordIsNeverOverwritten(t *testing.T) {
	ctx := context.Background()
	y, _, _, _ := newFakePair(t)
	x, _, _, _ := newFakePair(t) // another backend: its lock does not exclude y's
	meta := newFakeMeta()
	var sealerX Sealer
	var errX error
	yMisses := 0
	var once sync.Once
	meta.afterRead = func(key string, found bool) {
		if found {
			return
		}
		if yMisses++; yMisses == 2 { // y's check under the lock
			once.Do(func() { sealerX, errX = openSealer(ctx, meta, x, []byte("pw")) })
		}
	}
	sealerY, err := openSealer(ctx, meta, y, []byte("pw"))
	if err != nil || errX != nil || sealerX == nil {
		t.Fatal(err, errX)
	}
	sealed := sealerX.Seal([]byte("CA key"), []byte("ad"))
	if v, err := sealerY.Open(sealed, []byte("ad")); err != nil || string(v) != "CA key" {
		t.Fatalf("broker Y cannot open what broker X sealed: the record was replaced (%v)", err)
	}
}

// TestBrokersStartingTogetherAgreeOnTheKey starts two brokers on an
// empty database at once. The first broker's "no record yet" answer is
// held until the second has read too (without the lock both would
// write a record with their own salt) or is waiting for the lock.
func TestBrokersStartingTogetherAgreeOnTheKey(t *testing.T) {
	ctx := context.Background()
	for round := range 5 {
		a, b, f, _ := newFakePair(t)
		meta := newFakeMeta()
		var once sync.Once
		release := make(chan struct{})
		arrive := func() { once.Do(func() { close(release) }) }
		var reads sync.Mutex
		misses := 0
		meta.afterRead = func(key string, found bool) {
			if found {
				return
			}
			reads.Lock()
			misses++
			first := misses == 1
			reads.Unlock()
			if first {
				<-release
			} else {
				arrive()
			}
		}
		f.afterTryLock = func(name string, ok bool) {
			if name == kdfLockName && !ok {
				arrive()
			}
		}
		sealers := make([]Sealer, 2)
		var wg sync.WaitGroup
		for i, locker := range []*Storage{a, b} {
			wg.Go(func() {
				s, err := openSealer(ctx, meta, locker, []byte("same password"))
				if err != nil {
					t.Error(err)
				}
				sealers[i] = s
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		sealed := sealers[0].Seal([]byte("CA key"), []byte("ad"))
		if v, err := sealers[1].Open(sealed, []byte("ad")); err != nil || string(v) != "CA key" {
			t.Fatalf("round %d: broker B cannot open what broker A sealed: %v", round, err)
		}
		if _, held := f.lock(kdfLockName); held {
			t.Fatalf("round %d: the creation lock is left behind", round)
		}
	}
}

func TestWrongMasterPasswordIsRefused(t *testing.T) {
	ctx := context.Background()
	a, b, _, _ := newFakePair(t)
	meta := newFakeMeta()
	if _, err := openSealer(ctx, meta, a, []byte("the right one")); err != nil {
		t.Fatal(err)
	}
	_, err := openSealer(ctx, meta, b, []byte("a wrong one"))
	if !errors.Is(err, errWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "wrong one") || strings.Contains(err.Error(), "right one") {
		t.Fatal("the error shows a password")
	}
	if _, err := openSealer(ctx, meta, b, []byte("the right one")); err != nil {
		t.Fatalf("the right password after a wrong one: %v", err)
	}
}

func TestDamagedRecordIsRefused(t *testing.T) {
	ctx := context.Background()
	a, _, _, _ := newFakePair(t)
	meta := newFakeMeta()
	if _, err := openSealer(ctx, meta, a, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	good := meta.rows[kdfMetaKey]
	edit := func(f func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(good), &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		out, _ := json.Marshal(m)
		return string(out)
	}
	kdf := func(m map[string]any) map[string]any { return m["kdf"].(map[string]any) }
	for name, doc := range map[string]string{
		"not json":        "{",
		"trailing data":   good + "{}",
		"unknown field":   edit(func(m map[string]any) { m["extra"] = 1 }),
		"future version":  edit(func(m map[string]any) { m["format_version"] = 2 }),
		"other algorithm": edit(func(m map[string]any) { kdf(m)["algorithm"] = "scrypt" }),
		"short salt":      edit(func(m map[string]any) { kdf(m)["salt"] = "AAAA" }),
		"huge memory": edit(func(m map[string]any) {
			kdf(m)["params"].(map[string]any)["memory_kib"] = 1 << 31
		}),
		"no check":      edit(func(m map[string]any) { delete(m, "check") }),
		"another check": edit(func(m map[string]any) { m["check"] = strings.Repeat("A", len(m["check"].(string))) }),
		"another salt":  edit(func(m map[string]any) { kdf(m)["salt"] = "AAAAAAAAAAAAAAAAAAAAAA==" }),
	} {
		meta.rows[kdfMetaKey] = doc
		if _, err := openSealer(ctx, meta, a, []byte("pw")); err == nil || !strings.HasPrefix(err.Error(), "agent_vault_state storage: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
