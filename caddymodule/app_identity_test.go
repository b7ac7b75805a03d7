package caddymodule

// The app's part in identities: the local agent is made when the broker
// starts (not when a config is only validated), by the broker as the
// audit trail says; queued audit entries are written at shutdown.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// TestLocalAgentMadeAtStart: `agent-vault validate` (caddy.Validate:
// provision, then clean up) makes no local agent and writes no
// agent.token; starting does, and the trail names the broker (its
// instance id) as the one that made it.
func TestLocalAgentMadeAtStart(t *testing.T) {
	dir := t.TempDir()
	cfg := brokerConfig{dir: dir, api: freeAddr(t), proxy: freeAddr(t), ttl: 1}
	raw := strings.Replace(string(cfg.json()), `"admin_token":`, `"local_agent": "local", "admin_token":`, 1)
	var parsed caddy.Config
	if err := json.Unmarshal([]byte(raw), &parsed); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&parsed); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, localAgentTokenFile)
	if _, err := os.Stat(tokenFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("validating the config wrote %s: %v", tokenFile, err)
	}
	db, err := state.Open(context.Background(), state.Config{Backend: StateSQLite, DSN: filepath.Join(dir, defaultStateFile), Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	_, made, err := db.Agent(context.Background(), "local")
	db.Close()
	if err != nil || made {
		t.Fatalf("validating the config made the local agent: %v %v", made, err)
	}

	if err := caddy.Load([]byte(raw), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	if _, err := os.Stat(tokenFile); err != nil {
		t.Fatalf("starting wrote no %s: %v", tokenFile, err)
	}
	id, err := instanceID(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := activeApp(t).state.db.ListAudit(context.Background(), state.AuditFilter{Action: string(audit.AgentCreate), Target: "local"})
	if err != nil || len(entries) != 1 || entries[0].ActorKind != "broker" || entries[0].Actor != id {
		t.Fatalf("audit of the local agent: %+v %v, want one by broker %s", entries, err, id)
	}
}

// flakyAuditStore refuses its next refusals inserts, and keeps the
// entries after.
type flakyAuditStore struct {
	mu       sync.Mutex
	refusals int
	kept     []audit.Entry
}

func (s *flakyAuditStore) Insert(_ context.Context, e audit.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refusals > 0 {
		s.refusals--
		return errors.New("state sqlite: database is locked")
	}
	s.kept = append(s.kept, e)
	return nil
}

// TestDestructFlushesAudit: entries queued while the store was down
// are written when the shared state is destroyed (the last config
// stops), not lost, even if the store refuses the first tries then
// (one retry pass would give up); the counts say what was queued.
func TestDestructFlushesAudit(t *testing.T) {
	ctx := context.Background()
	db := openTestStateDB(t, zap.NewNop())
	a := &App{DataDir: t.TempDir(), logger: zap.NewNop()}
	sh, err := a.loadShared(ctx, db, sharedStores{catalog: catalogStore{db}, sessions: sessionStore{db}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	store := &flakyAuditStore{refusals: 3} // the Record, and two tries at shutdown
	sh.audit.Store = store
	sh.audit.Record(ctx, audit.Entry{Actor: "alice", ActorKind: audit.ActorOperator, Action: audit.AgentCreate, Target: "ci-bot"})
	if st := sh.auditStats(); st.Queued != 1 {
		t.Fatalf("stats with the store down: %+v", st)
	}
	if err := sh.Destruct(); err != nil {
		t.Fatal(err)
	}
	if len(store.kept) != 1 || store.kept[0].Target != "ci-bot" {
		t.Fatalf("after Destruct the store holds %+v, want the queued entry", store.kept)
	}
	if st := sh.auditStats(); st.Queued != 0 {
		t.Errorf("stats after Destruct: %+v", st)
	}
}
