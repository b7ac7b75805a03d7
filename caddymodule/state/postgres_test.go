package state

import (
	"strings"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/pgtest"
)

// feedPromise is how soon a write on one broker reaches the others: the
// product's promise.
const feedPromise = time.Second

func TestFeedReachesOtherInstances(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	clk := newClock()
	a := open(t, Config{Backend: BackendPostgres, DSN: dsn, Now: clk.Now})
	b := open(t, Config{Backend: BackendPostgres, DSN: dsn, Now: clk.Now})
	onB := subscribe(t, b)
	onA := subscribe(t, a)

	must(t, a.PutService(ctx, "github", []byte(`{}`)))
	onB.waitFor(t, feedPromise, Change{TopicServices, "github"})

	must(t, a.InsertSession(ctx, session("s1", 1, clk.Now())))
	onB.waitFor(t, feedPromise, Change{TopicSessions, "s1"})
	onB.reset()
	_, err := a.RevokeSession(ctx, "s1", clk.Now())
	must(t, err)
	onB.waitFor(t, feedPromise, Change{TopicSessions, "s1"})
	// What B reads on hearing of it is the committed revocation.
	if s, _, err := b.Session(ctx, "s1"); err != nil || s.RevokedAt == nil {
		t.Fatalf("B reads %+v %v", s, err)
	}

	_, err = a.CreateBuiltinHeader(ctx, "default", []byte(`{}`))
	must(t, err)
	onB.reset()
	must(t, a.PutCredential(ctx, "default", cred("K", 1, clk.Now())))
	onB.waitFor(t, feedPromise, Change{TopicCredentials, "default"})

	// The other way round, and the writer hears its own change too.
	onA.reset()
	_, err = b.DeleteService(ctx, "github")
	must(t, err)
	onA.waitFor(t, feedPromise, Change{TopicServices, "github"})

	// A rolled-back write announces nothing anywhere.
	onB.reset()
	if err := a.PutCredential(ctx, "default", cred("K", 1, clk.Now())); err == nil {
		t.Fatal("conflicting put succeeded")
	}
	must(t, a.PutService(ctx, "marker", []byte(`{}`)))
	onB.waitFor(t, feedPromise, Change{TopicServices, "marker"})
	onB.mu.Lock()
	defer onB.mu.Unlock()
	for _, c := range onB.seen {
		if c.Topic == TopicCredentials {
			t.Fatalf("rolled-back write announced: %v", onB.seen)
		}
	}
}

func TestPostgresOutage(t *testing.T) {
	srv := pgtest.Start(t)
	db := open(t, Config{
		Backend:        BackendPostgres,
		DSN:            srv.DSN(),
		PingInterval:   20 * time.Millisecond,
		MaxStale:       300 * time.Millisecond,
		ReloadInterval: time.Hour, // so the reloads seen here come from reconnecting
	})
	r := subscribe(t, db)
	if err := db.Healthy(); err != nil {
		t.Fatalf("Healthy after Open: %v", err)
	}

	srv.Stop(t)
	eventually(t, 10*time.Second, "Healthy still nil with the server stopped", func() bool { return db.Healthy() != nil })
	msg := db.Healthy().Error()
	if !strings.HasPrefix(msg, "state postgres: database unreachable for ") || strings.Contains(msg, srv.Password()) {
		t.Fatalf("Healthy = %q", msg)
	}
	err := db.PutService(ctx, "during", []byte(`{}`))
	if err == nil || !strings.HasPrefix(err.Error(), "state postgres: put service during: ") || strings.Contains(err.Error(), srv.Password()) {
		t.Fatalf("write while down: %v", err)
	}

	r.reset()
	srv.Start(t)
	eventually(t, 10*time.Second, "Healthy not nil again after the server restarted", func() bool { return db.Healthy() == nil })
	r.waitFor(t, 15*time.Second, fullReload()...)

	// The LISTEN connection is back: another instance's write arrives.
	other := open(t, Config{Backend: BackendPostgres, DSN: srv.DSN()})
	must(t, other.PutService(ctx, "after", []byte(`{}`)))
	r.waitFor(t, feedPromise, Change{TopicServices, "after"})

	// A crash (SIGKILL, crash recovery) heals the same way.
	r.reset()
	srv.Kill(t)
	srv.Start(t)
	r.waitFor(t, 15*time.Second, fullReload()...)
	eventually(t, 10*time.Second, "Healthy after crash recovery", func() bool { return db.Healthy() == nil })
	must(t, db.PutService(ctx, "after-crash", []byte(`{}`)))
	if list, err := other.ListServices(ctx); err != nil || len(list) != 2 {
		t.Fatalf("after the crash: %v %v", list, err)
	}
}
