package caddymodule

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// The activity entries still buffered when the shared state is
// destroyed (the last config stops) are written before the database
// closes, named with the data dir's instance id.
func TestDestructFlushesActivity(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := state.Open(ctx, state.Config{Backend: StateSQLite, DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	a := &App{DataDir: t.TempDir(), logger: zap.NewNop()}
	sh, err := a.loadShared(ctx, db, sharedStores{catalog: catalogStore{db}, sessions: sessionStore{db}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
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
	db, err = state.Open(ctx, state.Config{Backend: StateSQLite, DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.ListActivity(ctx, state.ActivityFilter{})
	if err != nil {
		t.Fatal(err)
	}
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
