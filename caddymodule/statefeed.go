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
	"sync"
	"time"

	"go.uber.org/zap"

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
type changeWorker struct {
	apply func(ctx context.Context, ch state.Change) error
	log   *zap.Logger

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
func newChangeWorker(log *zap.Logger, apply func(ctx context.Context, ch state.Change) error) *changeWorker {
	ctx, cancel := context.WithCancel(context.Background())
	return &changeWorker{apply: apply, log: log, queued: map[state.Change]bool{}, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
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

// start begins applying, the changes queued so far first.
func (w *changeWorker) start() { go w.run() }

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
		return sh.catalog.Reload(ctx)
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
