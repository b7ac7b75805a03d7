package caddymodule

// The state database's change feed, dispatched to the parts that cache
// what it holds: every broker sharing the database learns of every
// change, its own included (the handlers are idempotent). The feed
// delivers changes one at a time, in order.

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// feedTimeout bounds one change's reload, so a hung database cannot
// stall the feed forever.
const feedTimeout = 30 * time.Second

// dispatch handles one change of the shared caches: services reload
// the catalog, a session (or all of them, Key "") updates the registry.
// Credentials are not shared: each config's stores subscribe
// themselves (App.subscribeStores).
func (sh *sharedState) dispatch(ch state.Change) {
	ctx, cancel := context.WithTimeout(context.Background(), feedTimeout)
	defer cancel()
	var err error
	switch ch.Topic {
	case state.TopicServices:
		err = sh.catalog.Reload(ctx)
	case state.TopicSessions:
		if ch.Key == "" {
			err = sh.sessions.Reload(ctx)
		} else {
			err = sh.sessions.Apply(ctx, ch.Key)
		}
	default:
		return
	}
	logFeedError(sh.log, ch, err)
}

// reloadStores handles a credentials change for this config's stores:
// the store it names (all of them, Key "") re-reads the database.
func reloadStores(stores []namedReloader, log *zap.Logger, ch state.Change) {
	if ch.Topic != state.TopicCredentials {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), feedTimeout)
	defer cancel()
	var err error
	for _, st := range stores {
		if ch.Key == "" || ch.Key == st.name {
			if rerr := st.Reload(ctx); rerr != nil {
				err = rerr
			}
		}
	}
	logFeedError(log, ch, err)
}

// logFeedError logs a change that could not be applied; the next full
// reload retries it.
func logFeedError(log *zap.Logger, ch state.Change, err error) {
	if err != nil {
		log.Warn("applying a change from the state database failed; the next full reload retries",
			zap.String("topic", string(ch.Topic)), zap.String("key", ch.Key), zap.Error(err))
	}
}
