package caddymodule

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
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
	sess, token, err := other.Create(ctx, []string{"x"}, time.Hour, nil, func() (string, error) { return "ph", nil })
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
