package caddymodule

import (
	"bufio"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
	"github.com/agentvault/caddy-agent-vault/caddymodule/leafcerts"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// openTestShared loads the shared state of an App (a) on a SQLite state
// database in a new file (at path, for reopening it after Destruct,
// which closes it).
func openTestShared(t *testing.T) (a *App, sh *sharedState, path string) {
	t.Helper()
	ctx := context.Background()
	path = filepath.Join(t.TempDir(), "state.db")
	db, err := state.Open(ctx, state.Config{Backend: StateSQLite, DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	a = &App{DataDir: t.TempDir(), logger: zap.NewNop()}
	sh, err = a.loadShared(ctx, db, sharedStores{catalog: catalogStore{db}, sessions: sessionStore{db}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return a, sh, path
}

// storedActivity reopens the state database at path (closed by
// Destruct) and lists its activity entries, newest first.
func storedActivity(t *testing.T, path string) []state.ActivityRow {
	t.Helper()
	db, err := state.Open(context.Background(), state.Config{Backend: StateSQLite, DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.ListActivity(context.Background(), state.ActivityFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// The activity entries still buffered when the shared state is
// destroyed (the last config stops) are written before the database
// closes, named with the data dir's instance id.
func TestDestructFlushesActivity(t *testing.T) {
	ctx := context.Background()
	a, sh, path := openTestShared(t)
	for i := range 2 {
		sh.activity.rec.Observe(&activity.Entry{At: time.Now(), Method: "GET", Host: "h", Path: fmt.Sprintf("/%d", i), Status: 200, Decision: activity.Forwarded})
	}
	// Destruct ends every session, closing its tunnels: what is logged
	// as they close is written too (the activity log closes after).
	sess, _, err := sh.sessions.Create(ctx, sessions.Spec{Services: []string{}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sess.Track(&closerFunc{func() error {
		sh.activity.rec.Observe(&activity.Entry{At: time.Now(), Session: sess.ID, Method: "CONNECT", Host: "h", Port: 443, Status: 200, Decision: activity.Forwarded})
		return nil
	}})
	if err := sh.Destruct(); err != nil {
		t.Fatal(err)
	}
	rows := storedActivity(t, path)
	id, _ := instanceID(a.DataDir)
	if len(rows) != 3 || rows[0].Instance != id || id == "" || rows[0].Method != "CONNECT" {
		t.Fatalf("after Destruct: %+v (instance %q)", rows, id)
	}
	if st := sh.activity.rec.Stats(); st.Written != 3 || st.Queued != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The sweeper's purge deletes by age and by count, off its goroutine.
func TestActivityPurge(t *testing.T) {
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	now := time.Now()
	var rows []state.ActivityRow
	for i := range 1500 {
		at := now.Add(-time.Duration(i) * time.Second)
		if i >= 1400 {
			at = now.Add(-3 * time.Hour) // past a 1h retention
		}
		rows = append(rows, state.ActivityRow{ID: activity.NewID(at), At: at, Method: "GET", Decision: "forwarded"})
	}
	if err := db.InsertActivity(ctx, rows); err != nil {
		t.Fatal(err)
	}
	l := newActivityLog(db, "i", zap.NewNop())
	defer l.close(ctx)
	l.purge(time.Hour, 1000)
	deadline := time.Now().Add(10 * time.Second)
	for l.purging.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the purge did not finish")
		}
		time.Sleep(5 * time.Millisecond)
	}
	left := 0
	var before *state.Cursor
	for {
		page, err := db.ListActivity(ctx, state.ActivityFilter{Limit: 1000, Before: before})
		if err != nil {
			t.Fatal(err)
		}
		left += len(page)
		if len(page) < 1000 {
			break
		}
		before = &state.Cursor{At: page[len(page)-1].At, ID: page[len(page)-1].ID}
	}
	older, err := db.ListActivity(ctx, state.ActivityFilter{Limit: 1000, Before: &state.Cursor{At: now.Add(-time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	// By count the purge keeps whole chunks (of up to 64 entries).
	if left < 1000 || left >= 1000+64 || len(older) != 0 {
		t.Fatalf("after the purge: %d rows, %d older than the retention", left, len(older))
	}
}

// closerFunc is an io.Closer (a pointer: Track keys a map by it).
type closerFunc struct{ f func() error }

func (c *closerFunc) Close() error { return c.f() }

// Lost entries are logged once through the shared state's logger (not
// a config's, which a reload replaces), and not again until more are lost.
func TestActivityLogsLosses(t *testing.T) {
	ctx := context.Background()
	core, logs := observer.New(zap.WarnLevel)
	l := newActivityLog(openTestStateDB(t, zap.NewNop()), "i", zap.New(core))
	if err := l.close(ctx); err != nil {
		t.Fatal(err)
	}
	l.rec.Record(activity.Entry{Method: "GET"}) // closed: dropped
	l.logLosses()
	l.lossGate.Every = 0 // let the next call through: nothing new to say
	l.logLosses()
	lost := logs.FilterMessage("activity entries lost").All()
	if len(lost) != 1 || lost[0].LoggerName != "activity" || lost[0].ContextMap()["activity_dropped"] != uint64(1) {
		t.Fatalf("loss lines %+v", lost)
	}
}

// A request in an intercepted tunnel that shutdown cuts short (Destruct
// ends the sessions, closing their tunnels) records its entry after the
// tunnel closed, from the proxy's own goroutine: Destruct lets it do so
// before the activity Recorder's final flush, so it is written, not
// dropped.
func TestDestructWaitsForCutExchanges(t *testing.T) {
	ctx := context.Background()
	a, sh, path := openTestShared(t)
	destructed := false
	t.Cleanup(func() {
		if !destructed {
			sh.Destruct()
		}
	})

	// An upstream that holds the request until the proxy gives up on it.
	arrived := make(chan struct{}, 1)
	up := upstreamTLS(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	if err := sh.catalog.Put(ctx, services.Service{Name: "up", Host: up.hostPort, Auth: services.Auth{Type: services.AuthPassthrough}}); err != nil {
		t.Fatal(err)
	}

	// The proxy as Provision builds it over this shared state.
	a.state = sh
	var err error
	if a.creds, err = credentials.New(nil); err != nil {
		t.Fatal(err)
	}
	proxyRoot := newRootCA(t, "shutdown test root")
	issuer := proxyRoot.intermediate(t)
	if a.minter, err = leafcerts.New(func() ([]*x509.Certificate, crypto.Signer) {
		return []*x509.Certificate{issuer.cert}, issuer.key
	}, leafcerts.Options{}); err != nil {
		t.Fatal(err)
	}
	if a.egress, err = egress.ParsePolicy([]string{"127.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	a.self = new(egress.Listeners)
	p := &Proxy{}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	p.start(zap.NewNop(), a.proxyDeps())
	t.Cleanup(func() { p.Cleanup() })
	p.transport.TLSClientConfig.RootCAs = upstreamRoot(t).pool()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.ServeHTTP(w, r, nil) }))
	t.Cleanup(srv.Close)
	port := uint16(srv.Listener.Addr().(*net.TCPAddr).Port)
	a.self.Set([]egress.Listener{{Host: "127.0.0.1", FirstPort: port, LastPort: port}})

	_, token, err := sh.sessions.Create(ctx, sessions.Spec{Services: []string{"up"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a bound on a broken test, not a wait
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", up.hostPort, up.hostPort, basicAuth(token))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "127.0.0.1", RootCAs: proxyRoot.pool()})
	if _, err := fmt.Fprintf(tc, "GET /held HTTP/1.1\r\nHost: %s\r\n\r\n", up.hostPort); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(15 * time.Second): // a bound on a broken test, not a wait
		t.Fatal("the request did not reach the upstream")
	}

	destructed = true
	if err := sh.Destruct(); err != nil {
		t.Fatal(err)
	}
	if st := sh.activity.rec.Stats(); st.Dropped != 0 || st.Written != 1 {
		t.Errorf("Recorder after Destruct: %+v, want the cut request written", st)
	}
	rows := storedActivity(t, path)
	if len(rows) != 1 || rows[0].Path != "/held" || rows[0].Service != "up" {
		t.Fatalf("after Destruct: %+v, want the cut request's entry", rows)
	}
}
