package hashicorp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is an injected clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// harness is a Fetcher wired to a fakeVault, a fake clock and an
// in-memory log.
type harness struct {
	fv    *fakeVault
	f     *Fetcher
	clock *fakeClock
	logs  *observer.ObservedLogs
}

// newHarness builds a token-auth fetcher for fv reading KV v2 "secret";
// mutate adjusts the config.
func newHarness(t *testing.T, fv *fakeVault, mutate func(*Config)) *harness {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	clock := newClock()
	cfg := Config{
		Name:       "prod",
		Address:    fv.srv.URL,
		AuthMethod: AuthToken,
		Token:      rootToken,
		KVVersion:  2,
		Logger:     zap.New(core),
		Now:        clock.Now,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		f.Close()
		assertLogsClean(t, logs)
	})
	return &harness{fv: fv, f: f, clock: clock, logs: logs}
}

// useAppRole switches a config to AppRole auth.
func useAppRole(c *Config) {
	c.AuthMethod, c.Token, c.RoleID, c.SecretID = AuthAppRole, "", roleID, secretID
}

func (h *harness) fetch(t *testing.T) storebackends.Batch {
	t.Helper()
	b, err := h.f.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	assertBatchClean(t, b)
	return b
}

// fetchErr runs a Fetch that must fail, and checks the error leaks nothing.
func (h *harness) fetchErr(t *testing.T) error {
	t.Helper()
	b, err := h.f.Fetch(context.Background())
	if err == nil {
		t.Fatalf("Fetch succeeded with %d items, want an error", len(b.Items))
	}
	assertClean(t, err)
	return err
}

func (h *harness) checkLogin(t *testing.T) error {
	t.Helper()
	err := h.f.CheckLogin(context.Background())
	assertClean(t, err)
	return err
}

// messages returns the log messages at level.
func (h *harness) messages(level zapcore.Level) []string {
	var out []string
	for _, e := range h.logs.FilterLevelExact(level).All() {
		out = append(out, e.Message)
	}
	return out
}

// assertClean fails if err carries a token, AppRole credential or value.
func assertClean(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), leakMarker) {
		t.Errorf("error leaks a secret: %v", err)
	}
}

// assertBatchClean fails if a Problem carries a value, or an item is
// empty (the fake never stores empty values).
func assertBatchClean(t *testing.T, b storebackends.Batch) {
	t.Helper()
	for _, p := range b.Problems {
		if strings.Contains(fmt.Sprint(p), leakMarker) {
			t.Errorf("problem leaks a value: %+v", p)
		}
	}
	for _, it := range b.Items {
		if it.Value == "" {
			t.Errorf("item %s has an empty value", it.Name)
		}
	}
}

func assertLogsClean(t *testing.T, logs *observer.ObservedLogs) {
	t.Helper()
	for _, e := range logs.All() {
		if line := e.Message + fmt.Sprint(e.ContextMap()); strings.Contains(line, leakMarker) {
			t.Errorf("log line leaks a secret: %s", line)
		}
	}
}

// wantErr checks that err is non-nil, leaks nothing and contains every
// fragment.
func wantErr(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", fragments)
	}
	assertClean(t, err)
	for _, frag := range fragments {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error %q does not contain %q", err, frag)
		}
	}
}

// requestKeys lists the "METHOD /v1/path" of requests.
func requestKeys(reqs []fakeRequest) []string {
	keys := make([]string, len(reqs))
	for i, r := range reqs {
		keys[i] = r.key
	}
	return keys
}

func names(b storebackends.Batch) []string {
	var out []string
	for _, it := range b.Items {
		out = append(out, it.Name)
	}
	return out
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
