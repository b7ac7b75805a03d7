package caddymodule

// The state database's change feed, dispatched to the parts that cache
// what it holds: every broker sharing the database learns of every
// change, its own included (the handlers are idempotent).
//
// A subscription never applies a change on the feed's goroutine: it
// queues it for a changeWorker of its own. So a subscription can exist
// before what it updates is loaded (changes that arrive during the
// load wait, and none is lost), and a slow handler delays only its own
// worker.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// feedTimeout bounds one change's reload, so a hung database cannot
// stall a worker forever.
const feedTimeout = 15 * time.Second

// changeWorker applies the changes pushed to it, one at a time and in
// order, on its own goroutine, once started. Pushing never blocks: a
// change already waiting covers an identical one (the handler reads
// what the database holds when it runs), so the queue never holds more
// than the distinct keys.
//
// It also records when the last full reload (a Change with Key "", or
// any services change: the catalog always reloads in full) succeeded:
// a cache that cannot refresh stays stale silently otherwise, and
// health must say so (stale).
type changeWorker struct {
	apply func(ctx context.Context, ch state.Change) error
	log   *zap.Logger
	name  string           // what it caches, for health: "services", "sessions", "credentials"
	now   func() time.Time // time.Now; tests replace it before start

	lastFull atomic.Int64 // unix nanoseconds of the last successful full reload

	mu      sync.Mutex
	pending []state.Change
	queued  map[state.Change]bool
	wake    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
}

// newChangeWorker returns a worker that will apply changes with apply
// and log its failures to log. It queues from now on and applies once
// started.
func newChangeWorker(name string, log *zap.Logger, apply func(ctx context.Context, ch state.Change) error) *changeWorker {
	ctx, cancel := context.WithCancel(context.Background())
	return &changeWorker{apply: apply, log: log, name: name, now: time.Now,
		queued: map[state.Change]bool{}, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

// push queues ch; it is the feed subscription's callback.
func (w *changeWorker) push(ch state.Change) {
	w.mu.Lock()
	if !w.queued[ch] {
		w.queued[ch] = true
		w.pending = append(w.pending, ch)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// start begins applying, the changes queued so far first. The load
// that came before counts as a full reload.
func (w *changeWorker) start() {
	w.lastFull.Store(w.now().UnixNano())
	go w.run()
}

// full reports whether applying ch re-reads the whole topic.
func full(ch state.Change) bool { return ch.Key == "" || ch.Topic == state.TopicServices }

// stale is nil while the last full reload succeeded within bound, and
// an error saying for how long the cache has not been refreshed
// otherwise (a reload failing every time, or one hung on the database).
func (w *changeWorker) stale(bound time.Duration) error {
	since := w.now().Sub(time.Unix(0, w.lastFull.Load()))
	if since <= bound {
		return nil
	}
	return &cacheStale{what: w.name, since: since, bound: bound}
}

// cacheStale is a cache whose full reload has not succeeded within the
// bound.
type cacheStale struct {
	what         string
	since, bound time.Duration
}

func (e *cacheStale) Error() string {
	return fmt.Sprintf("the cached %s have not been refreshed from the database for %v (more than %v)",
		e.what, e.since.Round(time.Second), e.bound)
}

// stop ends the worker; a change being applied sees its context end.
func (w *changeWorker) stop() { w.cancel() }

func (w *changeWorker) run() {
	for {
		w.mu.Lock()
		var ch state.Change
		ok := len(w.pending) > 0
		if ok {
			ch = w.pending[0]
			w.pending = w.pending[1:]
			delete(w.queued, ch)
		}
		w.mu.Unlock()
		if !ok {
			select {
			case <-w.ctx.Done():
				return
			case <-w.wake:
				continue
			}
		}
		if w.ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(w.ctx, feedTimeout)
		err := w.apply(ctx, ch)
		cancel()
		if err == nil && full(ch) {
			w.lastFull.Store(w.now().UnixNano())
		}
		if err != nil && w.ctx.Err() == nil {
			w.log.Warn("applying a change from the state database failed; the next full reload retries",
				zap.String("topic", string(ch.Topic)), zap.String("key", ch.Key), zap.Error(err))
		}
	}
}

// route queues a change for its topic's worker; it is the shared
// state's feed callback and never blocks.
func (sh *sharedState) route(ch state.Change) {
	switch ch.Topic {
	case state.TopicServices:
		sh.servicesFeed.push(ch)
	case state.TopicSessions:
		sh.sessionsFeed.push(ch)
	}
}

// stopFeed ends the shared state's subscription and its workers.
func (sh *sharedState) stopFeed() {
	sh.cancelFeed()
	sh.servicesFeed.stop()
	sh.sessionsFeed.stop()
}

// apply handles one change of the shared caches: services reload the
// catalog, a session (or all of them, Key "") updates the registry.
// Credentials are not shared: each config's stores subscribe
// themselves (App.subscribeStores).
func (sh *sharedState) apply(ctx context.Context, ch state.Change) error {
	switch ch.Topic {
	case state.TopicServices:
		// Rows that do not decode are left out (fail closed) and
		// named; the rest of the table is current.
		err := sh.catalog.Reload(ctx)
		var skipped *catalog.SkippedError
		if errors.As(err, &skipped) {
			sh.log.Warn("stored services this broker cannot read are not served", zap.Strings("services", skipped.Names), zap.Error(err))
			return nil
		}
		return err
	case state.TopicSessions:
		if ch.Key == "" {
			return sh.sessions.Reload(ctx)
		}
		return sh.sessions.Apply(ctx, ch.Key)
	}
	return nil
}

// reloadStores handles a credentials change for a config's stores: the
// store it names (all of them, Key "") re-reads the database.
func reloadStores(ctx context.Context, stores []namedReloader, ch state.Change) error {
	if ch.Topic != state.TopicCredentials {
		return nil
	}
	var err error
	for _, st := range stores {
		if ch.Key == "" || ch.Key == st.name {
			if rerr := st.Reload(ctx); rerr != nil {
				err = rerr
			}
		}
	}
	return err
}
