package caddymodule

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/syncbuf"
)

func TestLocalAgent(t *testing.T) {
	logs := &syncbuf.Buffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logs), zap.DebugLevel))
	db := openTestStateDB(t, log)
	ids := identityDB{db}
	rec := &audit.Recorder{Store: auditStore{db}}
	path := filepath.Join(t.TempDir(), "agent.token")
	ctx := context.Background()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ensure := func() {
		t.Helper()
		if err := ensureLocalAgent(ctx, localAgentParts{db: ids, rec: rec, name: "local", path: path, maxTTL: 24 * time.Hour,
			actor: "0123abcd", now: func() time.Time { return created }, log: log}); err != nil {
			t.Fatal(err)
		}
	}

	// First start: the agent, with every service, and its token in a
	// file only the user reads.
	ensure()
	row, ok, err := db.Agent(ctx, "local")
	if err != nil || !ok || !slices.Equal(row.Services, []string{"*"}) || row.MaxSessionTTL != 24*time.Hour || !row.CreatedAt.Equal(created) {
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
	// Nobody asked for it: the broker did it, and says so.
	if err != nil || len(entries) != 1 || entries[0].Target != "local" || entries[0].Actor != "0123abcd" || entries[0].ActorKind != "broker" {
		t.Errorf("audit of the creation: %+v %v, want actor 0123abcd of kind broker", entries, err)
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

// TestRetentionPurges: the shared state's purges over the database
// delete audit entries, decided and long-pending access requests older
// than the retention and expired logins, at most once per purgeEvery
// (kept across config reloads, as sharedState holds them).
func TestRetentionPurges(t *testing.T) {
	log := zap.NewNop()
	db := openTestStateDB(t, log)
	ctx := context.Background()
	now := time.Now().UTC()
	clock := func() time.Time { return now }
	retention := &audit.Retention{Store: retentionDB{db}, Every: purgeEvery, Now: clock}
	logins := newLoginPurge(retentionDB{db}, purgeEvery, clock, log)
	old, recent := now.Add(-2*time.Hour), now.Add(-time.Minute)
	for id, at := range map[string]time.Time{"aud_old": old, "aud_new": recent} {
		if err := db.InsertAudit(ctx, state.AuditRow{ID: id, At: at, Actor: "x", ActorKind: "agent", Action: "login"}); err != nil {
			t.Fatal(err)
		}
	}
	agent := state.AgentRow{Name: "a", TokenHash: [32]byte{1}, Services: []string{"*"}, MaxSessionTTL: time.Hour, CreatedAt: old.Add(-time.Hour), UpdatedAt: old}
	if err := db.InsertAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	for id, at := range map[string]time.Time{"req_old": old, "req_new": recent, "req_pending_old": old, "req_pending_new": recent} {
		if err := db.InsertAccessRequest(ctx, state.AccessRequestRow{ID: id, Agent: "a", Host: id + ".example", CreatedAt: at}, agent.CreatedAt, maxPendingRequests); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(id, "req_pending") {
			if _, _, err := db.DecideAccessRequest(ctx, id, "denied", "op", "", at); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.InsertOperator(ctx, state.OperatorRow{Name: "op", PasswordHash: "$argon2id$x", Role: "admin", CreatedAt: old, UpdatedAt: old}); err != nil {
		t.Fatal(err)
	}
	for i, expires := range []time.Time{now.Add(-time.Second), now.Add(time.Hour)} {
		secrets, _, _, err := newLogin("op", old, expires)
		if err != nil {
			t.Fatal(err)
		}
		secrets[0].ID, secrets[1].ID = fmt.Sprint("lgn_", i), fmt.Sprint("lgn_", i)
		if err := db.InsertLogin(ctx, secrets, "$argon2id$x"); err != nil {
			t.Fatal(err)
		}
	}
	purge := func() {
		t.Helper()
		if err := retention.Purge(ctx, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := logins.Purge(ctx); err != nil {
			t.Fatal(err)
		}
	}
	purge()
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
	if !slices.Equal(ids, []string{"req_new", "req_pending_new"}) {
		t.Errorf("requests after the purge: %v (a pending one expires after the retention too)", ids)
	}
	if n, err := db.DeleteLoginsExpiredBefore(ctx, now.Add(-time.Minute)); err != nil || n != 0 {
		t.Errorf("logins left expired: %d %v", n, err)
	}
	// At most once per purgeEvery.
	db.InsertAudit(ctx, state.AuditRow{ID: "aud_old2", At: old, Actor: "x", ActorKind: "agent", Action: "login"})
	now = now.Add(purgeEvery - time.Second)
	purge()
	if rows, _ := db.ListAudit(ctx, state.AuditFilter{}); len(rows) != 2 {
		t.Errorf("a second purge within the hour ran: %d entries left", len(rows))
	}
	now = now.Add(time.Second)
	purge()
	// An hour later everything here is older than the retention.
	if rows, _ := db.ListAudit(ctx, state.AuditFilter{}); len(rows) != 0 {
		t.Errorf("the purge an hour later did not run: %d entries left", len(rows))
	}
}
