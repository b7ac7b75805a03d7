package caddymodule

// The local agent (App.LocalAgent): an agent made on first start, whose
// token av-launch on this machine reads from <data_dir>/agent.token.

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/atomicfile"
)

// localAgentStore is what provisioning the local agent needs.
type localAgentStore interface {
	Agent(ctx context.Context, name string) (state.AgentRow, bool, error)
	InsertAgent(ctx context.Context, a state.AgentRow) error
	DeleteAgent(ctx context.Context, name string, at time.Time) (bool, []string, error)
}

// provisionLocalAgent makes sure the local agent exists: created with
// every service and its token written to agent.token if it does not;
// left alone if it does (never rotated here: another broker of the
// cluster may hold the token), with a warning when agent.token is
// missing or holds another token. App.Start calls it, once the state
// database is open: provisioning alone (`agent-vault validate`) creates
// nothing. The audit trail names the broker (its instance id) as the
// creator: nobody asked for it.
func (a *App) provisionLocalAgent() error {
	if a.LocalAgent == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateOpenTimeout)
	defer cancel()
	actor, err := instanceID(a.DataDir)
	if err != nil {
		a.logger.Warn("no instance id for the audit trail; the local agent's creation is recorded as the broker's", zap.Error(err))
		actor = apiwire.ActorBroker
	}
	return ensureLocalAgent(ctx, localAgentParts{
		db: identityDB{a.state.db}, rec: a.state.audit, name: a.LocalAgent, path: filepath.Join(a.DataDir, localAgentTokenFile),
		maxTTL: time.Duration(a.MaxSessionTTL), actor: actor, now: time.Now, log: a.logger,
	})
}

// localAgentParts is what ensureLocalAgent works with.
type localAgentParts struct {
	db   localAgentStore
	rec  *audit.Recorder
	name string
	// path is agent.token's; maxTTL the agent's max_session_ttl.
	path   string
	maxTTL time.Duration
	// actor is the broker's instance id, the audit entry's actor.
	actor string
	now   func() time.Time
	log   *zap.Logger
}

// ensureLocalAgent is provisionLocalAgent with its parts given.
func ensureLocalAgent(ctx context.Context, p localAgentParts) error {
	db, name, path, log := p.db, p.name, p.path, p.log
	row, ok, err := db.Agent(ctx, name)
	if err != nil {
		return fmt.Errorf("local_agent %s: %w", name, err)
	}
	if ok {
		checkLocalAgentFile(row, path, log)
		return nil
	}
	token, hash, err := identity.NewToken(identity.KindAgent)
	if err != nil {
		return err
	}
	now := p.now().UTC()
	row = state.AgentRow{Name: name, TokenHash: hash, Services: []string{apiwire.AllServices}, MaxSessionTTL: p.maxTTL, CreatedAt: now, UpdatedAt: now}
	if err := db.InsertAgent(ctx, row); err != nil {
		if errors.Is(err, state.ErrConflict) {
			// Another broker made it a moment ago: its token is not ours.
			if row, ok, err := db.Agent(ctx, name); err == nil && ok {
				checkLocalAgentFile(row, path, log)
				return nil
			}
		}
		return fmt.Errorf("creating local_agent %s: %w", name, err)
	}
	if err := atomicfile.Write(path, []byte(token+"\n"), 0o600); err != nil {
		// An agent whose token nobody has is useless: take it back, so
		// the next start tries again.
		if _, _, derr := db.DeleteAgent(ctx, name, p.now().UTC()); derr != nil {
			log.Error("the local agent was created but its token could not be written, nor the agent deleted; rotate its token",
				zap.String("agent", name), zap.Error(derr))
		}
		return fmt.Errorf("writing the local agent's token to %s: %v", path, err)
	}
	p.rec.Record(ctx, audit.Entry{Actor: p.actor, ActorKind: apiwire.ActorBroker, Action: audit.AgentCreate,
		Target: name, Detail: "local_agent at start-up; services * max_session_ttl " + apiwire.FormatDuration(p.maxTTL)})
	log.Info("local agent created; av-launch on this machine uses its token", zap.String("agent", name), zap.String("token_file", path))
	return nil
}

// checkLocalAgentFile warns when agent.token cannot serve the existing
// local agent: missing, unreadable, or holding a token that is not
// the agent's (it was rotated elsewhere). The fix is printed; nothing
// is rotated here.
func checkLocalAgentFile(row state.AgentRow, path string, log *zap.Logger) {
	fix := fmt.Sprintf("to give av-launch a new token, run (with the admin token in AGENT_VAULT_TOKEN): agent-vault agent rotate %s --out %s; this ends the old token on every broker", row.Name, path)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		log.Warn("the local agent exists but its token file is missing, so av-launch cannot use it by default; "+fix,
			zap.String("agent", row.Name), zap.String("token_file", path))
	case err != nil:
		log.Warn("the local agent's token file cannot be read; "+fix, zap.String("agent", row.Name), zap.String("token_file", path), zap.Error(err))
	default:
		got := identity.HashToken(strings.TrimSpace(string(data)))
		if subtle.ConstantTimeCompare(got[:], row.TokenHash[:]) != 1 {
			log.Warn("the local agent's token file holds a token that is no longer the agent's (rotated?); "+fix,
				zap.String("agent", row.Name), zap.String("token_file", path))
		}
	}
}
