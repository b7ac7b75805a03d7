package caddymodule

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

func TestLocalAgent(t *testing.T) {
	logs := &lockedBuffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logs), zap.DebugLevel))
	db := openTestStateDB(t, log)
	ids := identityDB{db}
	rec := &audit.Recorder{Store: auditStore{db}}
	path := filepath.Join(t.TempDir(), "agent.token")
	ctx := context.Background()
	ensure := func() {
		t.Helper()
		if err := ensureLocalAgent(ctx, ids, rec, "local", path, 24*time.Hour, log); err != nil {
			t.Fatal(err)
		}
	}

	// First start: the agent, with every service, and its token in a
	// file only the user reads.
	ensure()
	row, ok, err := db.Agent(ctx, "local")
	if err != nil || !ok || !slices.Equal(row.Services, []string{"*"}) || row.MaxSessionTTL != 24*time.Hour {
		t.Fatalf("local agent: %+v %v %v", row, ok, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(data))
	if identity.HashToken(tok) != row.TokenHash || identity.KindOf(tok) != identity.KindAgent {
		t.Fatal("agent.token does not hold the local agent's token")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("agent.token mode %v, want 0600", fi.Mode().Perm())
	}
	entries, err := db.ListAudit(ctx, state.AuditFilter{Action: string(audit.AgentCreate)})
	if err != nil || len(entries) != 1 || entries[0].Target != "local" {
		t.Errorf("audit of the creation: %+v %v", entries, err)
	}

	// Next start: nothing changes, nothing is rotated, no warning.
	ensure()
	again, _, _ := db.Agent(ctx, "local")
	if again.TokenHash != row.TokenHash {
		t.Fatal("a restart rotated the local agent's token")
	}
	if strings.Contains(logs.String(), `"level":"warn"`) {
		t.Fatalf("a warning with everything in place: %s", logs)
	}

	// The file gone: a warning that says how to fix it, still no rotation.
	os.Remove(path)
	ensure()
	if again, _, _ := db.Agent(ctx, "local"); again.TokenHash != row.TokenHash {
		t.Fatal("a missing token file made the broker rotate the token")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("the broker wrote a token file for an existing agent")
	}
	if !strings.Contains(logs.String(), "agent-vault agent rotate local --out "+path) {
		t.Fatalf("the warning does not say how to fix it: %s", logs)
	}
	// A file with a stale token (rotated elsewhere): warned too.
	os.WriteFile(path, []byte("avt_stale\n"), 0o600)
	before := strings.Count(logs.String(), `"level":"warn"`)
	ensure()
	if strings.Count(logs.String(), `"level":"warn"`) != before+1 || !strings.Contains(logs.String(), "no longer the agent's") {
		t.Fatalf("no warning for a stale token file: %s", logs)
	}
	if strings.Contains(logs.String(), tok) {
		t.Fatal("the log holds the agent's token")
	}
}

func TestPurgeIdentity(t *testing.T) {
	log := zap.NewNop()
	db := openTestStateDB(t, log)
	ctx := context.Background()
	a := &App{state: &sharedState{db: db}, AuditRetention: caddy.Duration(time.Hour), logger: log}
	now := time.Now().UTC()
	old, recent := now.Add(-2*time.Hour), now.Add(-time.Minute)
	for id, at := range map[string]time.Time{"aud_old": old, "aud_new": recent} {
		if err := db.InsertAudit(ctx, state.AuditRow{ID: id, At: at, Actor: "x", ActorKind: "agent", Action: "login"}); err != nil {
			t.Fatal(err)
		}
	}
	for id, at := range map[string]time.Time{"req_old": old, "req_new": recent, "req_pending": old} {
		if err := db.InsertAccessRequest(ctx, state.AccessRequestRow{ID: id, Agent: "a", Host: "h.example", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if id != "req_pending" {
			if _, _, err := db.DecideAccessRequest(ctx, id, "denied", "op", "", at); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.purgeIdentity(ctx); err != nil {
		t.Fatal(err)
	}
	rows, _ := db.ListAudit(ctx, state.AuditFilter{})
	if len(rows) != 1 || rows[0].ID != "aud_new" {
		t.Errorf("audit after the purge: %+v", rows)
	}
	reqs, _ := db.ListAccessRequests(ctx, state.AccessRequestFilter{})
	var ids []string
	for _, r := range reqs {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"req_new", "req_pending"}) {
		t.Errorf("requests after the purge: %v (a pending one is never purged)", ids)
	}
	// At most once an hour.
	db.InsertAudit(ctx, state.AuditRow{ID: "aud_old2", At: old, Actor: "x", ActorKind: "agent", Action: "login"})
	if err := a.purgeIdentity(ctx); err != nil {
		t.Fatal(err)
	}
	if rows, _ := db.ListAudit(ctx, state.AuditFilter{}); len(rows) != 2 {
		t.Errorf("a second purge within the hour ran: %d entries left", len(rows))
	}
}
