package state

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// backend makes fresh databases of one kind for tests.
type backend struct {
	name string
	// config returns the Config of a new, empty database.
	config func(t testing.TB) Config
}

var backends = []backend{
	{BackendSQLite, func(t testing.TB) Config {
		return Config{Backend: BackendSQLite, DSN: filepath.Join(t.TempDir(), "state", "state.db")}
	}},
	{BackendPostgres, func(t testing.TB) Config {
		return Config{Backend: BackendPostgres, DSN: pgtest.Shared(t).NewDatabase(t)}
	}},
}

// forEachBackend runs fn as a subtest per backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

// open opens cfg and closes it at the end of the test.
func open(t *testing.T, cfg Config) *DB {
	t.Helper()
	db, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// clock is a settable Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recorder is a subscriber that keeps what it was told.
type recorder struct {
	mu   sync.Mutex
	seen []Change
	wake chan struct{}
}

func subscribe(t *testing.T, db *DB) *recorder {
	r := &recorder{wake: make(chan struct{}, 1)}
	cancel := db.Subscribe(func(c Change) {
		r.mu.Lock()
		r.seen = append(r.seen, c)
		r.mu.Unlock()
		select {
		case r.wake <- struct{}{}:
		default:
		}
	})
	t.Cleanup(cancel)
	return r
}

// waitFor waits until the subscriber has seen every one of want, or
// fails the test after timeout. It returns how long that took.
func (r *recorder) waitFor(t *testing.T, timeout time.Duration, want ...Change) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if r.hasAll(want) {
			return time.Since(start)
		}
		select {
		case <-r.wake:
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("after %v the subscriber has seen %v, want all of %v", timeout, r.seen, want)
		}
	}
}

func (r *recorder) hasAll(want []Change) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range want {
		found := false
		for _, s := range r.seen {
			if s == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.seen = nil
	r.mu.Unlock()
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fullReload is the changes a full reload announces.
func fullReload() []Change {
	var out []Change
	for _, tp := range allTopics {
		out = append(out, Change{Topic: tp})
	}
	return out
}

// contextUntil is a context that ends when done is closed.
func contextUntil(done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-done
		cancel()
	}()
	return ctx
}
