package infisical

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/infisical/infisicaltest"
)

// Test credentials. Every secret the tests use contains a leak marker,
// so that one showing up in an error, a problem or a log is caught.
const (
	project      = "proj-6f1c"
	clientID     = "client-id-0001"
	clientSecret = "cs-LEAKMARKER-5e3b9a"
	staticToken  = "st.static-LEAKMARKER-token"
)

// leakMarkers are substrings of the client secret, of every token the
// stub issues and of every secret value in the tests.
var leakMarkers = []string{"LEAKMARKER", "stub-access-token"}

// fakeClock is an injected clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
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

// harness is a Fetcher wired to a stub Infisical sharing its fake
// clock, with an in-memory log.
type harness struct {
	stub  *infisicaltest.Server
	f     *Fetcher
	clock *fakeClock
	logs  *observer.ObservedLogs
}

// newStub starts a stub holding one secret, GITHUB_TOKEN in prod:/agents.
func newStub(t *testing.T) *infisicaltest.Server {
	t.Helper()
	stub := infisicaltest.New(t, project, clientID, clientSecret)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_LEAKMARKER_1", Version: 1})
	return stub
}

// newHarness builds a universal auth fetcher for stub (newStub's if
// nil), reading prod:/agents; mutate adjusts the config.
func newHarness(t *testing.T, stub *infisicaltest.Server, mutate func(*Config)) *harness {
	t.Helper()
	if stub == nil {
		stub = newStub(t)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	clock := &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	stub.SetClock(clock.Now)
	cfg := Config{
		Name:         "infisical",
		SiteURL:      stub.URL,
		AuthMethod:   AuthUniversal,
		ClientID:     clientID,
		ClientSecret: clientSecret,
		ProjectID:    project,
		Environment:  "prod",
		SecretPath:   "/agents",
		Logger:       zap.New(core),
		Now:          clock.Now,
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
	return &harness{stub: stub, f: f, clock: clock, logs: logs}
}

// useToken switches a config to token auth with staticToken.
func useToken(c *Config) {
	c.AuthMethod, c.ClientID, c.ClientSecret, c.Token = AuthToken, "", "", staticToken
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

// wantEndpoints checks the requests the stub received since the last
// check, in order.
func (h *harness) wantEndpoints(t *testing.T, want ...string) []infisicaltest.Request {
	t.Helper()
	reqs := h.stub.Requests()
	var got []string
	for _, r := range reqs {
		got = append(got, r.Endpoint)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("requests = %q, want %q", got, want)
	}
	return reqs
}

// messages returns the log messages at level.
func (h *harness) messages(level zapcore.Level) []string {
	var out []string
	for _, e := range h.logs.FilterLevelExact(level).All() {
		out = append(out, e.Message)
	}
	return out
}

func leaks(s string) bool {
	for _, m := range leakMarkers {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// assertClean fails if err carries a credential or a value.
func assertClean(t *testing.T, err error) {
	t.Helper()
	if err != nil && leaks(err.Error()) {
		t.Errorf("error leaks a secret: %v", err)
	}
}

// assertBatchClean fails if a Problem carries a value.
func assertBatchClean(t *testing.T, b storebackends.Batch) {
	t.Helper()
	for _, p := range b.Problems {
		if leaks(fmt.Sprint(p)) {
			t.Errorf("problem leaks a value: %+v", p)
		}
	}
}

func assertLogsClean(t *testing.T, logs *observer.ObservedLogs) {
	t.Helper()
	for _, e := range logs.All() {
		if line := e.Message + fmt.Sprint(e.ContextMap()); leaks(line) {
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

// values maps each item's name to its value.
func values(b storebackends.Batch) map[string]string {
	out := map[string]string{}
	for _, it := range b.Items {
		out[it.Name] = it.Value
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
