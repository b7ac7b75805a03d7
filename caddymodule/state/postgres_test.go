package state

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// An instance whose LISTEN connection is down does not hear other
// instances' revocations, even while its pings succeed: past MaxStale
// it is unhealthy (so the app fails closed) until the connection is
// back. Here new connections to the database are refused and the
// listener's backend is terminated; the pool's open connections keep
// answering pings.
func TestHealthyFailsWhileNotListening(t *testing.T) {
	dsn := pgtest.Shared(t).NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	dbname := strings.TrimPrefix(u.Path, "/")
	db := open(t, Config{Backend: BackendPostgres, DSN: dsn, PingInterval: 20 * time.Millisecond, MaxStale: 300 * time.Millisecond, ReloadInterval: time.Hour})
	r := subscribe(t, db)
	// A database cannot close itself to connections: the statements run
	// from the maintenance database.
	maint := *u
	maint.Path = "/postgres"
	admin, err := pgx.Connect(ctx, maint.String())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := admin.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	allow := func(yes bool) string {
		return fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", pgx.Identifier{dbname}.Sanitize(), yes)
	}
	exec(allow(false))
	t.Cleanup(func() { _, _ = admin.Exec(ctx, allow(true)) })
	exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN %'", dbname)

	eventually(t, 10*time.Second, "Healthy nil with the LISTEN connection down", func() bool { return db.Healthy() != nil })
	msg := db.Healthy().Error()
	if !strings.HasPrefix(msg, "state postgres: not receiving other instances' changes for ") {
		t.Fatalf("Healthy = %q", msg)
	}
	// The pool's open connections still answer. A query may find them
	// all busy for a moment (the pinger runs every 20 ms) and then
	// needs a new connection, which the database refuses now: so ask
	// until one of the open ones takes it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, err := db.ListServices(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool no longer answers, so this proves nothing: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	r.reset()
	exec(allow(true))
	eventually(t, 15*time.Second, "Healthy not nil again once the LISTEN connection is back", func() bool { return db.Healthy() == nil })
	r.waitFor(t, 15*time.Second, fullReload()...)
}
