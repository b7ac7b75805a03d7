// Package syncengine keeps an in-memory copy of an external credential
// store (HashiCorp Vault, Infisical, ...) up to date. A store only
// implements storebackends.Fetcher; the engine owns the rest: polling,
// versions, staleness, health, atomic snapshot swaps and back-off, so
// every store behaves the same way and none repeats that logic.
//
// Each sync fetches the store's complete content and validates it:
// items with an invalid name, an empty value or a control character
// other than tab in the value (values go into HTTP headers) are dropped
// and reported as problems in Health. A name that occurs more than once
// in a batch is dropped entirely, every copy, since injecting the wrong
// secret is worse than injecting none. A credential's version is the
// backend's, or else "sha256:" and 16 hex digits of its value's hash,
// so that rotations are seen even in unversioned backends.
//
// The result replaces the served snapshot atomically, and only if it
// differs; readers never wait for a fetch. A failed fetch, or a batch
// that would remove every credential (unless AllowEmpty), keeps the
// last good snapshot: Health turns "degraded", then "stale" once
// MaxStaleness has passed since the last success, and from then on
// Fresh fails so that requests needing the store can be refused. The
// next successful sync recovers, without a restart.
package syncengine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Defaults and limits of Options.
const (
	DefaultInterval     = 30 * time.Second
	DefaultMaxStaleness = 5 * time.Minute
	DefaultTimeout      = 10 * time.Second
	// MinInterval keeps a misconfigured store from hammering its backend.
	MinInterval = 100 * time.Millisecond
)

// Options configure an Engine. Zero durations take their defaults.
type Options struct {
	// Store is the store's name, used in logs, health and errors. Required.
	Store string
	// Fetcher reads the store's complete content. Required.
	Fetcher storebackends.Fetcher
	// Interval between polls while the store is healthy. Default 30s,
	// at least 100ms.
	Interval time.Duration
	// MaxStaleness is how long the last good snapshot may be served
	// after the last successful sync; past it, Fresh fails. Default 5m;
	// at least Interval.
	MaxStaleness time.Duration
	// Timeout bounds each Fetch (and CheckLogin). Default 10s; below
	// MaxStaleness.
	Timeout time.Duration
	// AllowEmpty accepts a sync that would remove every credential of a
	// store that had some. Off by default: such a batch more likely
	// means a broken policy or path than a deliberate purge, so it is
	// refused like a failed fetch.
	AllowEmpty bool
	// MaxBackoff caps the delay between attempts after failures. The
	// delay starts at Interval and doubles per consecutive failure,
	// with ±10% jitter. Default MaxStaleness/4 (but at least Interval);
	// must lie between Interval and MaxStaleness.
	MaxBackoff time.Duration
	// Logger receives the engine's logs; nil discards them.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
	// After waits between polls; nil means time.After. Tests inject a
	// fake to drive the loop without sleeping.
	After func(time.Duration) <-chan time.Time
	// OnChange, if set, is called after a new snapshot was swapped in
	// (a credential was added, removed or changed value, version,
	// source or update time). It is called with no engine lock held,
	// from the loop or from a SyncNow caller, possibly concurrently, so
	// it should just read the current state (Values, List). It must
	// not call Stop.
	OnChange func()
}

// Engine serves the last good snapshot of one external store and keeps
// it fresh. Its read methods are safe for concurrent use and never wait
// for a fetch.
type Engine struct {
	name         string
	fetcher      storebackends.Fetcher
	interval     time.Duration
	maxStaleness time.Duration
	timeout      time.Duration
	maxBackoff   time.Duration
	allowEmpty   bool
	log          *zap.Logger
	now          func() time.Time
	after        func(time.Duration) <-chan time.Time
	onChange     func()

	// snap is the current immutable snapshot; never nil after New.
	snap atomic.Pointer[snapshot]

	// syncing is a one-slot semaphore serialising syncs; a channel
	// rather than a mutex so that SyncNow can give up when its context
	// ends.
	syncing chan struct{}

	mu    sync.Mutex // guards state
	state syncState

	// Lifecycle: stopCtx ends the loop and aborts its fetch; done is
	// closed when the loop has exited (or by Stop if it never started).
	stopCtx   context.Context
	cancel    context.CancelFunc
	startOnce sync.Once
	done      chan struct{}
}

// syncState is the engine's mutable bookkeeping, guarded by Engine.mu.
type syncState struct {
	lastSuccess time.Time
	lastAttempt time.Time
	lastError   string
	problems    []storebackends.Problem
	failures    int           // consecutive failed attempts
	retryIn     time.Duration // the loop's next wait
	syncs       uint64
	changes     uint64
	staleLogged bool // the current outage was already logged as stale
}

var _ storebackends.Store = (*Engine)(nil)

// New checks opts, fills in defaults and returns an idle engine: call
// Initial, then Start.
func New(opts Options) (*Engine, error) {
	if opts.Store == "" {
		return nil, errors.New("sync engine: store name is required")
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("store %q: "+format, append([]any{opts.Store}, args...)...)
	}
	if opts.Fetcher == nil {
		return nil, fail("a fetcher is required")
	}
	if opts.Interval < 0 || opts.MaxStaleness < 0 || opts.Timeout < 0 || opts.MaxBackoff < 0 {
		return nil, fail("interval, max_staleness, timeout and max_backoff must not be negative")
	}
	interval := orDefault(opts.Interval, DefaultInterval)
	maxStaleness := orDefault(opts.MaxStaleness, DefaultMaxStaleness)
	timeout := orDefault(opts.Timeout, DefaultTimeout)
	if interval < MinInterval {
		return nil, fail("interval %v is below the minimum of %v", interval, MinInterval)
	}
	// The last success is stamped at a fetch's start and the next poll
	// starts an interval after the previous one ended: a bound below
	// two intervals would make a healthy store flap to stale.
	if maxStaleness < 2*interval {
		return nil, fail("max_staleness %v must be at least twice the interval %v", maxStaleness, interval)
	}
	if timeout >= maxStaleness {
		return nil, fail("timeout %v must be less than max_staleness %v", timeout, maxStaleness)
	}
	maxBackoff := opts.MaxBackoff
	if maxBackoff == 0 {
		maxBackoff = max(maxStaleness/4, interval)
	}
	if maxBackoff < interval || maxBackoff > maxStaleness {
		return nil, fail("max_backoff %v must lie between the interval %v and max_staleness %v", maxBackoff, interval, maxStaleness)
	}

	e := &Engine{
		name:         opts.Store,
		fetcher:      opts.Fetcher,
		interval:     interval,
		maxStaleness: maxStaleness,
		timeout:      timeout,
		maxBackoff:   maxBackoff,
		allowEmpty:   opts.AllowEmpty,
		log:          opts.Logger,
		now:          opts.Now,
		after:        opts.After,
		onChange:     opts.OnChange,
		syncing:      make(chan struct{}, 1),
		done:         make(chan struct{}),
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.log = e.log.With(zap.String("store", e.name))
	if e.now == nil {
		e.now = time.Now
	}
	if e.after == nil {
		e.after = time.After
	}
	e.snap.Store(emptySnapshot)
	e.stopCtx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Initial prepares the engine at start-up: it checks the login if the
// fetcher can, then runs one sync that must succeed, so that a bad
// token or an unreachable store fails start-up with a clear message.
func (e *Engine) Initial(ctx context.Context) error {
	if lc, ok := e.fetcher.(storebackends.LoginChecker); ok {
		loginCtx, cancel := context.WithTimeout(ctx, e.timeout)
		err := lc.CheckLogin(loginCtx)
		cancel()
		if err != nil {
			return fmt.Errorf("store %q: login failed: %w", e.name, err)
		}
	}
	if err := e.syncSerialised(ctx); err != nil {
		return fmt.Errorf("store %q: initial sync: %w", e.name, err)
	}
	// A first sync that finds nothing is far more often a wrong mount,
	// path or policy than an empty store: say so at start-up.
	if len(e.snap.Load().entries) == 0 && !e.allowEmpty {
		return fmt.Errorf("store %q: the first sync found no credentials (check the configured path or folder and what the store's credentials may read; set allow_empty to start anyway)", e.name)
	}
	return nil
}

// LastSuccess is the start of the last successful sync (zero if none).
func (e *Engine) LastSuccess() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.lastSuccess
}

// Start runs the polling loop in one background goroutine. Only the
// first call has an effect, and none after Stop.
func (e *Engine) Start() {
	e.startOnce.Do(func() { go e.run() })
}

// Stop ends the loop, aborting a fetch in flight, and waits until it
// has exited. It is idempotent and may be called without Start.
func (e *Engine) Stop() {
	e.cancel()
	// If the loop never started, nobody else will close done; this
	// also turns any later Start into a no-op.
	e.startOnce.Do(func() { close(e.done) })
	<-e.done
}

// SyncNow runs one sync immediately, after any sync already running.
// It returns the reason the sync failed or was refused; the engine then
// keeps serving its last good snapshot. If ctx ends first, nothing is
// recorded in health, as the store did not fail.
func (e *Engine) SyncNow(ctx context.Context) error {
	if err := e.syncSerialised(ctx); err != nil {
		return fmt.Errorf("store %q: %w", e.name, err)
	}
	return nil
}

func (e *Engine) syncSerialised(ctx context.Context) error {
	select {
	case e.syncing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	changed, err := e.sync(ctx)
	<-e.syncing
	// Outside every engine lock, so OnChange may call back into the engine.
	if changed && e.onChange != nil {
		e.onChange()
	}
	return err
}

// run is the polling loop: wait, sync, repeat until Stop.
func (e *Engine) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		wait := e.state.retryIn
		e.mu.Unlock()
		select {
		case <-e.stopCtx.Done():
			return
		case <-e.after(wait):
		}
		// The error is already logged and recorded in health.
		_ = e.syncSerialised(e.stopCtx)
	}
}

// List returns the metadata of every credential, sorted by name; it
// never carries values.
func (e *Engine) List() []storebackends.Meta {
	return append([]storebackends.Meta(nil), e.snap.Load().metas...)
}

// Values returns a fresh copy of every credential's value by name.
func (e *Engine) Values() map[string]string {
	s := e.snap.Load()
	values := make(map[string]string, len(s.entries))
	for name, ent := range s.entries {
		values[name] = ent.value
	}
	return values
}
