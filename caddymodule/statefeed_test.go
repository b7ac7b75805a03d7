package caddymodule

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// blockingCatalog is a catalog store whose PutService waits until
// release is closed (or its context ends), as a write waiting on a row
// lock another broker holds does.
type blockingCatalog struct {
	catalog.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *blockingCatalog) PutService(ctx context.Context, name string, doc []byte) error {
	b.once.Do(func() { close(b.entered) })
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Store.PutService(ctx, name, doc)
}

// A service write of the API that waits on the database holds up
// neither the services another broker changes nor, above all, a session
// another broker revokes.
func TestBlockedServiceWriteDelaysNoRevocation(t *testing.T) {
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	other := sessions.NewRegistry(sessionStore{db}) // another broker
	sess, token, err := other.Create(ctx, sessions.Spec{Services: []string{"x"}, TTL: time.Hour, NewPlaceholder: func() (string, error) { return "ph", nil }})
	if err != nil {
		t.Fatal(err)
	}
	blocked := &blockingCatalog{Store: catalogStore{db}, entered: make(chan struct{}), release: make(chan struct{})}
	a := &App{DataDir: t.TempDir(), logger: zap.NewNop()}
	sh, err := a.loadShared(ctx, db, sharedStores{catalog: blocked, sessions: sessionStore{db}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.stopFeed)
	if _, err := sh.sessions.Authenticate(token); err != nil {
		t.Fatal(err)
	}
	putDone := make(chan error, 1)
	go func() { putDone <- sh.catalog.Put(ctx, bearer("x", "x.example.com", "T")) }()
	t.Cleanup(func() {
		close(blocked.release)
		if err := <-putDone; err != nil {
			t.Errorf("the blocked Put, released: %v", err)
		}
	})
	<-blocked.entered

	// The other broker adds a service, then revokes the session.
	if err := db.PutService(ctx, "y", mustJSON(t, bearer("y", "y.example.com", "T"))); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Revoke(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the revocation applies while a service write is blocked", func() bool {
		_, err := sh.sessions.Authenticate(token)
		return errors.Is(err, sessions.ErrRevoked)
	})
	eventually(t, 5*time.Second, "the other broker's service applies while a service write is blocked", func() bool {
		return sh.catalog.Services().AllowsHost("y.example.com", 443, true, nil)
	})
}

// failingSessions is a session store whose All fails while fail is set.
type failingSessions struct {
	sessions.Store
	fail atomic.Bool
}

func (f *failingSessions) All(ctx context.Context, expiredAfter time.Time) ([]sessions.Record, error) {
	if f.fail.Load() {
		return nil, errors.New("state sqlite: no such table: sessions")
	}
	return f.Store.All(ctx, expiredAfter)
}

// A cache whose full reload keeps failing (here the sessions: a table
// this broker may not read, while pings succeed) makes health fail once
// it has gone reload_interval + max_stale without one; a successful
// reload heals it. A single-session change does not count as one.
func TestCacheThatCannotRefreshFailsHealth(t *testing.T) {
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	store := &failingSessions{Store: sessionStore{db}}
	a := &App{DataDir: t.TempDir(), logger: zap.NewNop(), State: &StateConfig{ReloadInterval: caddy.Duration(30 * time.Second), MaxStale: caddy.Duration(time.Minute)}}
	sh, err := a.loadShared(ctx, db, sharedStores{catalog: catalogStore{db}, sessions: store, now: now}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.stopFeed)
	if err := sh.healthy(); err != nil {
		t.Fatalf("healthy at start: %v", err)
	}
	store.fail.Store(true)
	offset.Store(int64(2 * time.Minute))
	sh.route(state.Change{Topic: state.TopicServices}) // services refresh fine
	eventually(t, 5*time.Second, "health fails for the sessions cache", func() bool {
		err := sh.healthy()
		return err != nil && strings.Contains(err.Error(), "cached sessions") && !strings.Contains(err.Error(), "services")
	})
	// A session-level change reads one row: not a refresh of the cache.
	sh.route(state.Change{Topic: state.TopicSessions, Key: "ses_nothing"})
	store.fail.Store(false)
	sh.route(state.Change{Topic: state.TopicSessions})
	eventually(t, 5*time.Second, "health back after a successful reload", func() bool { return sh.healthy() == nil })
}
