package syncengine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agentvault/caddy-agent-vault/storebackends"
	"github.com/agentvault/caddy-agent-vault/storebackends/syncengine"
)

// fakeFetcher returns whatever the test last scripted with set.
type fakeFetcher struct {
	mu       sync.Mutex
	batch    storebackends.Batch
	err      error
	panicVal any
	calls    int
	deadline time.Duration // time left on the last Fetch's context
	inFlight atomic.Int32
	overlap  atomic.Bool // two Fetch calls ran at once
	// block, when set, makes Fetch signal started and wait for its
	// context to end.
	block   bool
	started chan struct{}
}

func newFetcher(items ...storebackends.Item) *fakeFetcher {
	return &fakeFetcher{batch: storebackends.Batch{Items: items}, started: make(chan struct{}, 1)}
}

func (f *fakeFetcher) set(err error, items ...storebackends.Item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batch, f.err = storebackends.Batch{Items: items}, err
}

func (f *fakeFetcher) setBatch(b storebackends.Batch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batch, f.err = b, nil
}

func (f *fakeFetcher) Fetch(ctx context.Context) (storebackends.Batch, error) {
	if f.inFlight.Add(1) > 1 {
		f.overlap.Store(true)
	}
	defer f.inFlight.Add(-1)
	f.mu.Lock()
	f.calls++
	if dl, ok := ctx.Deadline(); ok {
		f.deadline = time.Until(dl)
	}
	batch, err, block, pv := f.batch, f.err, f.block, f.panicVal
	f.mu.Unlock()
	if pv != nil {
		panic(pv)
	}
	if block {
		f.started <- struct{}{}
		<-ctx.Done()
		return storebackends.Batch{}, ctx.Err()
	}
	batch.Items = slices.Clone(batch.Items)
	return batch, err
}

func (f *fakeFetcher) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// loginFetcher adds a scripted CheckLogin.
type loginFetcher struct {
	*fakeFetcher
	loginErr error
}

func (l *loginFetcher) CheckLogin(context.Context) error { return l.loginErr }

// clock is a manually advanced clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeAfter hands each wait of the loop to the test, which fires it.
type fakeAfter struct{ requests chan waitRequest }

type waitRequest struct {
	d    time.Duration
	fire chan time.Time
}

func (f *fakeAfter) After(d time.Duration) <-chan time.Time {
	r := waitRequest{d: d, fire: make(chan time.Time, 1)}
	f.requests <- r
	return r.fire
}

// next returns the loop's next wait; the loop requests it only after
// finishing the previous sync.
func (f *fakeAfter) next(t *testing.T) waitRequest {
	t.Helper()
	select {
	case r := <-f.requests:
		return r
	case <-time.After(10 * time.Second): // a hang guard, not synchronisation
		t.Fatal("the loop did not ask to wait")
		return waitRequest{}
	}
}

type harness struct {
	e       *syncengine.Engine
	fetcher *fakeFetcher
	clock   *clock
	after   *fakeAfter
	changes atomic.Int32
	logs    *observer.ObservedLogs
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newHarness builds an engine named "vault" (Interval 1s, MaxStaleness
// 10s unless edit changes them) around fetcher.
func newHarness(t *testing.T, fetcher storebackends.Fetcher, edit func(*syncengine.Options)) *harness {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{clock: &clock{t: t0}, after: &fakeAfter{requests: make(chan waitRequest, 16)}, logs: logs}
	switch f := fetcher.(type) {
	case *fakeFetcher:
		h.fetcher = f
	case *loginFetcher:
		h.fetcher = f.fakeFetcher
	}
	opts := syncengine.Options{
		Store:        "vault",
		Fetcher:      fetcher,
		Interval:     time.Second,
		MaxStaleness: 10 * time.Second,
		Timeout:      time.Second,
		Logger:       zap.New(core),
		Now:          h.clock.Now,
		After:        h.after.After,
		OnChange:     func() { h.changes.Add(1) },
	}
	if edit != nil {
		edit(&opts)
	}
	e, err := syncengine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	h.e = e
	return h
}

func (h *harness) mustSync(t *testing.T) {
	t.Helper()
	if err := h.e.SyncNow(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func item(name, value, version string) storebackends.Item {
	return storebackends.Item{Name: name, Value: value, Version: version, Source: "secret/app#" + strings.ToLower(name)}
}

func TestNewValidation(t *testing.T) {
	f := newFetcher()
	cases := []struct {
		name string
		opts syncengine.Options
		want string
	}{
		{"no store", syncengine.Options{Fetcher: f}, "store name is required"},
		{"no fetcher", syncengine.Options{Store: "vault"}, `store "vault": a fetcher is required`},
		{"negative", syncengine.Options{Store: "vault", Fetcher: f, Timeout: -1}, "must not be negative"},
		{"interval too short", syncengine.Options{Store: "vault", Fetcher: f, Interval: 50 * time.Millisecond}, "interval 50ms is below the minimum of 100ms"},
		{"staleness below interval", syncengine.Options{Store: "vault", Fetcher: f, Interval: 10 * time.Minute}, "max_staleness 5m0s must be at least twice the interval 10m0s"},
		{"timeout too long", syncengine.Options{Store: "vault", Fetcher: f, MaxStaleness: time.Minute, Timeout: time.Minute}, "timeout 1m0s must be less than max_staleness 1m0s"},
		{"backoff below interval", syncengine.Options{Store: "vault", Fetcher: f, MaxBackoff: time.Second}, "max_backoff 1s must lie between the interval 30s and max_staleness 5m0s"},
		{"backoff above staleness", syncengine.Options{Store: "vault", Fetcher: f, MaxBackoff: time.Hour}, "max_backoff 1h0m0s must lie between"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := syncengine.New(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}

	t.Run("defaults", func(t *testing.T) {
		e, err := syncengine.New(syncengine.Options{Store: "vault", Fetcher: f})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Health(t0).MaxStaleness; got != "5m0s" {
			t.Errorf("default max_staleness = %s, want 5m0s", got)
		}
		// Default MaxBackoff is MaxStaleness/4 = 75s, so many failures
		// wait 75s ±10%.
		if d := e.Backoff(100); d < 67500*time.Millisecond || d > 82500*time.Millisecond {
			t.Errorf("capped back-off = %v, want 75s ±10%%", d)
		}
		if d := e.Backoff(1); d < 27*time.Second || d > 33*time.Second {
			t.Errorf("first back-off = %v, want the 30s default interval ±10%%", d)
		}
	})
	t.Run("backoff never below interval", func(t *testing.T) {
		e, err := syncengine.New(syncengine.Options{Store: "vault", Fetcher: f, Interval: 2 * time.Minute, MaxBackoff: 2 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if d := e.Backoff(100); d < 108*time.Second || d > 132*time.Second {
			t.Errorf("capped back-off = %v, want the 2m interval ±10%%", d)
		}
	})
}

func TestInitialSuccess(t *testing.T) {
	f := newFetcher(item("B_TOKEN", "b-value", "3"), item("A_KEY", "a-value", ""))
	h := newHarness(t, f, nil)
	if err := h.e.Initial(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []storebackends.Meta{
		{Name: "A_KEY", Store: "vault", Version: syncengine.ContentVersionForTest("a-value"), UpdatedAt: t0, Source: "secret/app#a_key"},
		{Name: "B_TOKEN", Store: "vault", Version: "3", UpdatedAt: t0, Source: "secret/app#b_token"},
	}
	if got := h.e.List(); !slices.Equal(got, want) {
		t.Fatalf("List = %+v\nwant %+v", got, want)
	}
	if got := h.e.Values(); len(got) != 2 || got["A_KEY"] != "a-value" || got["B_TOKEN"] != "b-value" {
		t.Fatalf("Values = %v", got)
	}
	// Values is a copy: changing it must not change the engine.
	h.e.Values()["A_KEY"] = "tampered"
	if h.e.Values()["A_KEY"] != "a-value" {
		t.Fatal("Values returned the engine's own map")
	}
	if n := h.changes.Load(); n != 1 {
		t.Errorf("OnChange called %d times, want 1", n)
	}
	hl := h.e.Health(t0.Add(2 * time.Second))
	if hl.Status != syncengine.StatusOK || hl.Credentials != 2 || hl.Syncs != 1 || hl.Changes != 1 ||
		!hl.LastSuccess.Equal(t0) || hl.Staleness != "2s" || hl.LastError != "" {
		t.Fatalf("Health = %+v", hl)
	}
	if err := h.e.Fresh(t0); err != nil {
		t.Fatal(err)
	}
}

func TestInitialEmptyStoreIsRefusedUnlessAllowed(t *testing.T) {
	h := newHarness(t, newFetcher(), nil)
	if err := h.e.Initial(context.Background()); err == nil || !strings.Contains(err.Error(), "found no credentials") {
		t.Fatalf("empty first sync: %v", err)
	}
	h = newHarness(t, newFetcher(), func(o *syncengine.Options) { o.AllowEmpty = true })
	if err := h.e.Initial(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hl := h.e.Health(t0); hl.Status != syncengine.StatusOK || hl.Credentials != 0 {
		t.Fatalf("Health = %+v", hl)
	}
}

func TestInitialLoginFailure(t *testing.T) {
	lf := &loginFetcher{fakeFetcher: newFetcher(item("A", "v", "")), loginErr: errors.New("permission denied")}
	h := newHarness(t, lf, nil)
	err := h.e.Initial(context.Background())
	if err == nil || err.Error() != `store "vault": login failed: permission denied` {
		t.Fatalf("Initial = %v", err)
	}
	if !errors.Is(err, lf.loginErr) {
		t.Error("the login error is not wrapped")
	}
	if n := h.fetcher.callCount(); n != 0 {
		t.Errorf("Fetch called %d times after a failed login", n)
	}
	lf.loginErr = nil
	if err := h.e.Initial(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestInitialFetchFailure(t *testing.T) {
	f := newFetcher()
	f.set(errors.New("connection refused"))
	h := newHarness(t, f, nil)
	err := h.e.Initial(context.Background())
	if err == nil || err.Error() != `store "vault": initial sync: fetch failed: connection refused` {
		t.Fatalf("Initial = %v", err)
	}
	if hl := h.e.Health(t0); hl.Status != syncengine.StatusNeverSynced || hl.LastError != "fetch failed: connection refused" || hl.Staleness != "" {
		t.Fatalf("Health = %+v", hl)
	}
	var stale *syncengine.StaleError
	if err := h.e.Fresh(t0); !errors.As(err, &stale) || err.Error() != `store "vault" has never synced` || !stale.LastSuccess.IsZero() {
		t.Fatalf("Fresh = %v", err)
	}
}

func TestFetchTimeout(t *testing.T) {
	h := newHarness(t, newFetcher(), func(o *syncengine.Options) { o.Timeout = 3 * time.Second })
	h.mustSync(t)
	h.fetcher.mu.Lock()
	left := h.fetcher.deadline
	h.fetcher.mu.Unlock()
	if left <= 0 || left > 3*time.Second {
		t.Fatalf("Fetch context had %v left, want at most the 3s timeout", left)
	}
}

func TestRotationExplicitVersion(t *testing.T) {
	h := newHarness(t, newFetcher(item("TOKEN", "old", "1"), item("OTHER", "o", "7")), nil)
	h.mustSync(t)
	h.clock.Advance(time.Minute)
	h.fetcher.set(nil, item("TOKEN", "new", "2"), item("OTHER", "o", "7"))
	before := h.e.SnapshotID()
	h.mustSync(t)
	if h.e.SnapshotID() == before {
		t.Fatal("no new snapshot after a rotation")
	}
	if n := h.changes.Load(); n != 2 {
		t.Fatalf("OnChange called %d times, want 2 (initial + rotation)", n)
	}
	metas := h.e.List()
	if metas[1].Name != "TOKEN" || metas[1].Version != "2" || !metas[1].UpdatedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("TOKEN meta = %+v", metas[1])
	}
	if metas[0].Name != "OTHER" || !metas[0].UpdatedAt.Equal(t0) {
		t.Fatalf("OTHER's update time changed: %+v", metas[0])
	}
	if h.e.Values()["TOKEN"] != "new" {
		t.Fatal("value not rotated")
	}
	if hl := h.e.Health(h.clock.Now()); hl.Syncs != 2 || hl.Changes != 2 {
		t.Fatalf("Health = %+v", hl)
	}
	// One Info line per change, naming the change without the value.
	changed := h.logs.FilterMessage("credentials changed").All()
	if len(changed) != 2 {
		t.Fatalf("%d change log lines, want 2", len(changed))
	}
	if got := changed[1].ContextMap()["changes"]; fmt.Sprint(got) != "[~TOKEN@2]" {
		t.Fatalf("changes logged as %v", got)
	}
}

func TestRotationContentHash(t *testing.T) {
	h := newHarness(t, newFetcher(item("TOKEN", "old", "")), nil)
	h.mustSync(t)
	v1 := h.e.List()[0].Version
	if v1 != syncengine.ContentVersionForTest("old") || !strings.HasPrefix(v1, "hmac:") || len(v1) != len("hmac:")+16 {
		t.Fatalf("derived version = %q", v1)
	}
	h.clock.Advance(time.Minute)
	h.fetcher.set(nil, item("TOKEN", "new", ""))
	h.mustSync(t)
	m := h.e.List()[0]
	if m.Version == v1 || m.Version != syncengine.ContentVersionForTest("new") || !m.UpdatedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after rotation: %+v (old version %s)", m, v1)
	}
	if n := h.changes.Load(); n != 2 {
		t.Fatalf("OnChange called %d times, want 2", n)
	}
}

func TestUnchangedBatchIsNotSwapped(t *testing.T) {
	for _, version := range []string{"5", ""} {
		t.Run("version="+version, func(t *testing.T) {
			h := newHarness(t, newFetcher(item("TOKEN", "v", version), item("B", "b", "")), nil)
			h.mustSync(t)
			before, metas := h.e.SnapshotID(), h.e.List()
			h.clock.Advance(5 * time.Second)
			h.mustSync(t)
			if h.e.SnapshotID() != before {
				t.Fatal("an unchanged batch swapped in a new snapshot")
			}
			if n := h.changes.Load(); n != 1 {
				t.Fatalf("OnChange called %d times, want 1", n)
			}
			if got := h.e.List(); !slices.Equal(got, metas) || !got[1].UpdatedAt.Equal(t0) {
				t.Fatalf("List changed: %+v", got)
			}
			hl := h.e.Health(h.clock.Now())
			if hl.Syncs != 2 || hl.Changes != 1 || !hl.LastSuccess.Equal(t0.Add(5*time.Second)) {
				t.Fatalf("Health = %+v", hl)
			}
			if n := len(h.logs.FilterMessage("credentials changed").All()); n != 1 {
				t.Fatalf("%d change log lines, want 1", n)
			}
			if n := len(h.logs.FilterMessage("store unchanged").FilterLevelExact(zapcore.DebugLevel).All()); n != 1 {
				t.Fatalf("%d debug lines for the unchanged poll, want 1", n)
			}
		})
	}
}

func TestBackendUpdatedAtAndSourceChange(t *testing.T) {
	backendTime := time.Date(2029, 5, 6, 7, 8, 9, 0, time.UTC)
	it := item("TOKEN", "v", "4")
	it.UpdatedAt = backendTime
	h := newHarness(t, newFetcher(it), nil)
	h.mustSync(t)
	if m := h.e.List()[0]; !m.UpdatedAt.Equal(backendTime) {
		t.Fatalf("UpdatedAt = %v, want the backend's %v", m.UpdatedAt, backendTime)
	}
	// Moving a secret to another path changes what List shows.
	it.Source = "secret/moved#token"
	h.fetcher.set(nil, it)
	h.mustSync(t)
	if m := h.e.List()[0]; m.Source != "secret/moved#token" || h.changes.Load() != 2 {
		t.Fatalf("source change not applied: %+v, %d changes", m, h.changes.Load())
	}
}

func TestRemovalIsAChange(t *testing.T) {
	h := newHarness(t, newFetcher(item("A", "a", ""), item("B", "b", "")), nil)
	h.mustSync(t)
	h.fetcher.set(nil, item("A", "a", ""))
	h.mustSync(t)
	if got := h.e.Values(); len(got) != 1 || got["A"] != "a" || h.changes.Load() != 2 {
		t.Fatalf("Values = %v after removing B, %d changes", got, h.changes.Load())
	}
	if got := h.logs.FilterMessage("credentials changed").All()[1].ContextMap()["changes"]; fmt.Sprint(got) != "[-B]" {
		t.Fatalf("changes logged as %v", got)
	}
}

func TestOutageAndRecovery(t *testing.T) {
	h := newHarness(t, newFetcher(item("TOKEN", "v", "1")), nil)
	h.mustSync(t) // at t0; MaxStaleness is 10s

	h.clock.Advance(time.Second)
	h.fetcher.set(errors.New("503 from vault"))
	if err := h.e.SyncNow(context.Background()); err == nil || err.Error() != `store "vault": fetch failed: 503 from vault` {
		t.Fatalf("SyncNow = %v", err)
	}
	if got := h.e.Values()["TOKEN"]; got != "v" {
		t.Fatal("a failed fetch dropped the last good snapshot")
	}
	hl := h.e.Health(h.clock.Now())
	if hl.Status != syncengine.StatusDegraded || hl.LastError != "fetch failed: 503 from vault" ||
		!hl.LastAttempt.Equal(t0.Add(time.Second)) || !hl.LastSuccess.Equal(t0) || hl.Credentials != 1 {
		t.Fatalf("Health = %+v", hl)
	}
	if err := h.e.Fresh(t0.Add(10 * time.Second)); err != nil {
		t.Fatalf("Fresh at exactly max_staleness = %v", err)
	}

	h.clock.Advance(10 * time.Second) // t0+11s
	if err := h.e.SyncNow(context.Background()); err == nil {
		t.Fatal("want an error")
	}
	var stale *syncengine.StaleError
	err := h.e.Fresh(h.clock.Now())
	if !errors.As(err, &stale) || !stale.LastSuccess.Equal(t0) || stale.MaxStaleness != 10*time.Second || stale.Store != "vault" {
		t.Fatalf("Fresh = %#v", err)
	}
	if want := `store "vault" last synced 11s ago, beyond its max_staleness of 10s`; err.Error() != want {
		t.Fatalf("Fresh error %q, want %q", err, want)
	}
	if hl := h.e.Health(h.clock.Now()); hl.Status != syncengine.StatusStale || hl.Staleness != "11s" {
		t.Fatalf("Health = %+v", hl)
	}
	h.clock.Advance(time.Second)
	_ = h.e.SyncNow(context.Background())
	if n := len(h.logs.FilterMessage("store sync failed").FilterLevelExact(zapcore.WarnLevel).All()); n != 3 {
		t.Fatalf("%d failure warnings, want 3", n)
	}
	staleLogs := h.logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(staleLogs) != 1 || !strings.Contains(staleLogs[0].Message, "stale") {
		t.Fatalf("want exactly one stale error line, got %v", staleLogs)
	}
	warn := h.logs.FilterMessage("store sync failed").All()[2].ContextMap()
	if warn["consecutive_failures"] != int64(3) || warn["error"] != "fetch failed: 503 from vault" {
		t.Fatalf("warning fields = %v", warn)
	}

	// Recovery without restart.
	h.fetcher.set(nil, item("TOKEN", "v2", "2"))
	h.mustSync(t)
	if err := h.e.Fresh(h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	hl = h.e.Health(h.clock.Now())
	if hl.Status != syncengine.StatusOK || hl.LastError != "" || hl.Staleness != "0s" || h.e.Values()["TOKEN"] != "v2" {
		t.Fatalf("Health after recovery = %+v", hl)
	}
	if len(h.logs.FilterMessage("store sync recovered").All()) != 1 {
		t.Fatal("recovery not logged")
	}
	// A new outage is logged as stale again.
	h.clock.Advance(time.Minute)
	h.fetcher.set(errors.New("down"))
	_ = h.e.SyncNow(context.Background())
	if n := len(h.logs.FilterLevelExact(zapcore.ErrorLevel).All()); n != 2 {
		t.Fatalf("%d stale error lines after a second outage, want 2", n)
	}
}

func TestStaleErrorFormat(t *testing.T) {
	cases := []struct {
		age, max time.Duration
		want     string
	}{
		{7 * time.Minute, 5 * time.Minute, `store "vault" last synced 7m ago, beyond its max_staleness of 5m`},
		{90*time.Minute + 400*time.Millisecond, time.Hour, `store "vault" last synced 1h30m ago, beyond its max_staleness of 1h`},
		{65 * time.Second, 30 * time.Second, `store "vault" last synced 1m5s ago, beyond its max_staleness of 30s`},
		{2*time.Hour + 3*time.Second, time.Hour, `store "vault" last synced 2h0m3s ago, beyond its max_staleness of 1h`},
	}
	for _, c := range cases {
		err := &syncengine.StaleError{Store: "vault", LastSuccess: t0, MaxStaleness: c.max, Age: c.age}
		if err.Error() != c.want {
			t.Errorf("got %q, want %q", err.Error(), c.want)
		}
	}
}

// within reports whether d is base ±10%.
func within(d, base time.Duration) bool {
	return d >= base-base/10 && d <= base+base/10
}

func TestLoopBackoff(t *testing.T) {
	// Interval 1s, MaxStaleness 20s: MaxBackoff defaults to 5s.
	h := newHarness(t, newFetcher(item("A", "a", "")), func(o *syncengine.Options) { o.MaxStaleness = 20 * time.Second })
	if err := h.e.Initial(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.e.Start()
	h.e.Start() // no second loop

	w := h.after.next(t)
	if w.d != time.Second {
		t.Fatalf("healthy wait = %v, want the interval", w.d)
	}
	h.fetcher.set(errors.New("down"))
	var waits []time.Duration
	for _, base := range []time.Duration{1, 2, 4, 5, 5} {
		w.fire <- h.clock.Now()
		w = h.after.next(t)
		waits = append(waits, w.d)
		if !within(w.d, base*time.Second) {
			t.Fatalf("back-off waits %v, want %vs ±10%% last", waits, base)
		}
	}
	if hl := h.e.Health(h.clock.Now()); hl.Status != syncengine.StatusDegraded {
		t.Fatalf("status %s, want degraded", hl.Status)
	}

	h.fetcher.set(nil, item("A", "a", ""))
	w.fire <- h.clock.Now()
	w = h.after.next(t)
	if w.d != time.Second {
		t.Fatalf("wait after recovery = %v, want the interval", w.d)
	}
	h.fetcher.set(errors.New("down again"))
	w.fire <- h.clock.Now()
	if w = h.after.next(t); !within(w.d, time.Second) {
		t.Fatalf("first back-off after recovery = %v, want 1s ±10%%", w.d)
	}
	if n := h.fetcher.callCount(); n != 8 {
		t.Fatalf("Fetch called %d times, want 8", n)
	}
	// The logged next attempt is the wait the loop then used.
	warns := h.logs.FilterMessage("store sync failed").All()
	if got := warns[len(warns)-1].ContextMap()["next_attempt_in"]; got != w.d {
		t.Fatalf("logged next_attempt_in %v, loop waits %v", got, w.d)
	}
	h.e.Stop()
}

func TestBackoffJitterVaries(t *testing.T) {
	h := newHarness(t, newFetcher(), nil)
	seen := map[time.Duration]bool{}
	for range 50 {
		d := h.e.Backoff(2)
		if !within(d, 2*time.Second) {
			t.Fatalf("back-off %v, want 2s ±10%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Fatal("back-off has no jitter")
	}
}

func TestLoopSyncsImmediatelyIfNeverSynced(t *testing.T) {
	h := newHarness(t, newFetcher(item("A", "a", "")), nil)
	h.e.Start()
	w := h.after.next(t)
	if w.d != 0 {
		t.Fatalf("first wait without Initial = %v, want 0", w.d)
	}
	w.fire <- t0
	if w = h.after.next(t); w.d != time.Second || h.e.Values()["A"] != "a" {
		t.Fatalf("after the first loop sync: wait %v, values %v", w.d, h.e.Values())
	}
}

func TestAllowEmpty(t *testing.T) {
	batches := map[string][]storebackends.Item{
		"no items":          nil,
		"all items invalid": {item("1BAD", "x", ""), item("EMPTY", "", "")},
	}
	for name, items := range batches {
		t.Run("refused/"+name, func(t *testing.T) {
			h := newHarness(t, newFetcher(item("A", "a", ""), item("B", "b", "")), nil)
			h.mustSync(t)
			before := h.e.SnapshotID()
			h.fetcher.set(nil, items...)
			err := h.e.SyncNow(context.Background())
			if err == nil || !strings.Contains(err.Error(), `store "vault": refused a sync that would remove all 2 credentials (allow_empty is off)`) {
				t.Fatalf("SyncNow = %v", err)
			}
			if h.e.SnapshotID() != before || len(h.e.Values()) != 2 || h.changes.Load() != 1 {
				t.Fatal("a refused batch changed the snapshot")
			}
			hl := h.e.Health(h.clock.Now())
			if hl.Status != syncengine.StatusDegraded || !strings.Contains(hl.LastError, "refused") || hl.Syncs != 1 || len(hl.Problems) != len(items) {
				t.Fatalf("Health = %+v", hl)
			}
		})
	}
	t.Run("allowed", func(t *testing.T) {
		h := newHarness(t, newFetcher(item("A", "a", "")), func(o *syncengine.Options) { o.AllowEmpty = true })
		h.mustSync(t)
		h.fetcher.set(nil)
		h.mustSync(t)
		if len(h.e.Values()) != 0 || len(h.e.List()) != 0 || h.changes.Load() != 2 {
			t.Fatalf("empty batch not applied: %v", h.e.List())
		}
		if hl := h.e.Health(h.clock.Now()); hl.Status != syncengine.StatusOK || hl.Credentials != 0 {
			t.Fatalf("Health = %+v", hl)
		}
	})
}

func TestValidationProblems(t *testing.T) {
	const secret = "s3cr3t"
	long := strings.Repeat("N", 300)
	batch := storebackends.Batch{
		Problems: []storebackends.Problem{{Source: "secret/gone", Reason: "permission denied"}},
		Items: []storebackends.Item{
			item("GOOD", secret+"-good", ""),
			item("WITH_TAB", secret+"\tx", ""),
			item("1BAD", secret, ""),
			item(long, secret, ""),
			item("EMPTY", "", ""),
			item("NEWLINE", secret+"\r\nX-Evil: 1", ""),
			item("DEL", secret+"\x7f", ""),
			{Name: "DUP", Value: secret + "1", Source: "secret/a#dup"},
			{Name: "DUP", Value: secret + "2", Source: "secret/b#dup"},
			{Name: "DUP", Value: secret + "3", Source: "secret/c#dup"},
			{Name: "HALF", Value: "", Source: "secret/a#half"},
			{Name: "HALF", Value: secret, Source: "secret/b#half"},
		},
	}
	f := newFetcher()
	f.setBatch(batch)
	h := newHarness(t, f, nil)
	h.mustSync(t)

	values := h.e.Values()
	if len(values) != 2 || values["GOOD"] != secret+"-good" || values["WITH_TAB"] != secret+"\tx" {
		t.Fatalf("accepted %v", values)
	}
	hl := h.e.Health(h.clock.Now())
	type pr struct{ name, reason string }
	var got []pr
	for _, p := range hl.Problems {
		got = append(got, pr{p.Name, p.Reason})
		if strings.Contains(p.Source+p.Name+p.Reason, secret) {
			t.Errorf("problem reveals a value: %+v", p)
		}
	}
	invalid := "invalid name: use letters, digits and '_', not starting with a digit, at most 128 characters"
	want := []pr{
		{"", "permission denied"},
		{"1BAD", invalid},
		{strings.Repeat("N", 160) + "…", invalid},
		{"EMPTY", "empty value"},
		{"NEWLINE", "value contains a control character"},
		{"DEL", "value contains a control character"},
		{"HALF", "empty value"},
		{"DUP", "name defined 3 times; none is used, as the engine cannot tell which value is meant"},
		{"HALF", "name defined 2 times; none is used, as the engine cannot tell which value is meant"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("problems\n got %q\nwant %q", got, want)
	}
	if src := hl.Problems[7].Source; src != "secret/a#dup, secret/b#dup, secret/c#dup" {
		t.Errorf("collision sources = %q", src)
	}
	if hl.Status != syncengine.StatusOK {
		t.Errorf("problems made the store %s", hl.Status)
	}
	// Problems are logged once, not on every poll that repeats them.
	h.mustSync(t)
	if n := len(h.logs.FilterMessage("store reported problems with some credentials").All()); n != 1 {
		t.Fatalf("problems logged %d times, want 1", n)
	}
	// And cleared when the store is fixed.
	h.fetcher.set(nil, item("GOOD", "x", ""))
	h.mustSync(t)
	if p := h.e.Health(h.clock.Now()).Problems; len(p) != 0 {
		t.Fatalf("problems kept after a clean batch: %v", p)
	}
}

func TestNoValueInLogsOrHealth(t *testing.T) {
	const secret = "value-that-must-not-leak"
	h := newHarness(t, newFetcher(item("A", secret, ""), item("B", "\n"+secret, "")), nil)
	h.mustSync(t)
	h.fetcher.set(nil, item("A", secret+"2", ""))
	h.mustSync(t)
	h.fetcher.set(nil)
	_ = h.e.SyncNow(context.Background())
	h.fetcher.set(errors.New("down"))
	_ = h.e.SyncNow(context.Background())
	for _, l := range h.logs.All() {
		if text := fmt.Sprint(l.Message, l.ContextMap()); strings.Contains(text, secret) {
			t.Fatalf("log line reveals a value: %s", text)
		}
	}
	// The JSON is what the API shows; %+v would not follow SyncStatus.
	health, err := json.Marshal(h.e.Health(h.clock.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(health), `"last_error":"`) {
		t.Fatalf("health lacks the sync state: %s", health)
	}
	if text := fmt.Sprintf("%s %+v", health, h.e.List()); strings.Contains(text, secret) {
		t.Fatalf("health or list reveals a value: %s", text)
	}
}

func TestFetcherPanic(t *testing.T) {
	h := newHarness(t, newFetcher(item("A", "a", "")), nil)
	h.mustSync(t)
	h.fetcher.mu.Lock()
	h.fetcher.panicVal = "secret-in-panic"
	h.fetcher.mu.Unlock()
	err := h.e.SyncNow(context.Background())
	if err == nil || err.Error() != `store "vault": fetch failed: fetcher panicked (string)` {
		t.Fatalf("SyncNow = %v", err)
	}
	if h.e.Values()["A"] != "a" {
		t.Fatal("snapshot lost after a panic")
	}
}

func TestStop(t *testing.T) {
	t.Run("idempotent", func(t *testing.T) {
		h := newHarness(t, newFetcher(), nil)
		h.e.Start()
		h.after.next(t) // the loop is running and waiting
		h.e.Stop()
		select {
		case <-h.e.Done():
		default:
			t.Fatal("Stop returned before the loop exited")
		}
		h.e.Stop()
	})
	t.Run("without start", func(t *testing.T) {
		h := newHarness(t, newFetcher(), nil)
		h.e.Stop()
		h.e.Stop()
		h.e.Start() // too late: must not start a loop nobody stops
		select {
		case <-h.e.Done():
		default:
			t.Fatal("done not closed")
		}
		select {
		case r := <-h.after.requests:
			t.Fatalf("a loop started after Stop and waits %v", r.d)
		default:
		}
	})
	t.Run("aborts a fetch in flight", func(t *testing.T) {
		h := newHarness(t, newFetcher(item("A", "a", "")), nil)
		h.mustSync(t)
		h.e.Start()
		w := h.after.next(t)
		h.fetcher.mu.Lock()
		h.fetcher.block = true
		h.fetcher.mu.Unlock()
		w.fire <- t0
		<-h.fetcher.started
		h.e.Stop()
		<-h.e.Done()
		// Being stopped is not a store failure.
		if hl := h.e.Health(h.clock.Now()); hl.Status != syncengine.StatusOK || hl.LastError != "" {
			t.Fatalf("Health = %+v", hl)
		}
	})
}

func TestSyncNowGivesUpWhenContextEnds(t *testing.T) {
	h := newHarness(t, newFetcher(item("A", "a", "")), nil)
	h.mustSync(t)
	h.fetcher.mu.Lock()
	h.fetcher.block = true
	h.fetcher.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error)
	go func() { first <- h.e.SyncNow(ctx) }()
	<-h.fetcher.started

	// A second sync waits for the first and honours its own context.
	waitCtx, waitCancel := context.WithCancel(context.Background())
	waitCancel()
	if err := h.e.SyncNow(waitCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("queued SyncNow = %v", err)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("aborted SyncNow = %v", err)
	}
	if hl := h.e.Health(h.clock.Now()); hl.Status != syncengine.StatusOK || hl.LastError != "" || h.e.Values()["A"] != "a" {
		t.Fatalf("an abandoned sync was recorded: %+v", hl)
	}
}

func TestOnChangeMayCallBack(t *testing.T) {
	var h *harness
	var seen map[string]string
	h = newHarness(t, newFetcher(item("A", "a", "")), func(o *syncengine.Options) {
		o.OnChange = func() {
			seen = h.e.Values()
			_ = h.e.Health(h.clock.Now())
			_ = h.e.Fresh(h.clock.Now())
			// A nested sync finds nothing new, so this does not recurse.
			if err := h.e.SyncNow(context.Background()); err != nil {
				t.Error(err)
			}
		}
	})
	h.mustSync(t)
	if seen["A"] != "a" {
		t.Fatalf("OnChange saw %v, want the new snapshot", seen)
	}
}

func TestConcurrentSyncsAndReads(t *testing.T) {
	h := newHarness(t, newFetcher(item("A", "a", "1")), nil)
	h.mustSync(t)
	h.e.Start()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if v := h.e.Values()["A"]; v != "a" && v != "b" {
					t.Errorf("read %q", v)
					return
				}
				_ = h.e.List()
				_ = h.e.Health(h.clock.Now())
				_ = h.e.Fresh(h.clock.Now())
			}
		})
	}
	var syncs sync.WaitGroup
	for i := range 50 {
		syncs.Go(func() {
			if i%2 == 0 {
				h.fetcher.set(nil, item("A", "a", "1"))
			} else {
				h.fetcher.set(nil, item("A", "b", "2"))
			}
			_ = h.e.SyncNow(context.Background())
		})
		if i%10 == 0 {
			w := h.after.next(t)
			w.fire <- t0
		}
	}
	syncs.Wait()
	close(stop)
	wg.Wait()
	h.e.Stop()
	if h.fetcher.overlap.Load() {
		t.Fatal("two fetches ran at once")
	}
}

// Deleting the last secret in the backend (say, after a leak) removes
// it at once: the backend explained the removal, so it is not refused
// as an unexplained empty batch.
func TestExplainedRemovalOfEverything(t *testing.T) {
	h := newHarness(t, newFetcher(item("LEAKED", "v", "1")), nil)
	h.mustSync(t)
	h.fetcher.setBatch(storebackends.Batch{Problems: []storebackends.Problem{{Name: "LEAKED", Source: "secret/app", Reason: "soft-deleted in Vault"}}})
	h.mustSync(t)
	if got := h.e.List(); len(got) != 0 {
		t.Fatalf("deleted credential still listed: %v", got)
	}
	// Unexplained: refused.
	h2 := newHarness(t, newFetcher(item("KEEP", "v", "1")), nil)
	h2.mustSync(t)
	h2.fetcher.setBatch(storebackends.Batch{})
	if err := h2.e.SyncNow(context.Background()); err == nil || len(h2.e.List()) != 1 {
		t.Fatalf("unexplained empty batch accepted: %v", err)
	}
}
