package caddymodule

// Agents: who may mint sessions, for which services and how long. An
// agent's token is shown once, when it is made (create, rotate); only
// its hash is kept.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// agentStore is what the agent routes read and write.
type agentStore interface {
	InsertAgent(ctx context.Context, a state.AgentRow) error
	Agent(ctx context.Context, name string) (state.AgentRow, bool, error)
	ListAgents(ctx context.Context) ([]state.AgentRow, error)
	UpdateAgent(ctx context.Context, name string, services []string, maxTTL time.Duration, at time.Time) (bool, error)
	RotateAgentToken(ctx context.Context, name string, hash [32]byte, at time.Time) (bool, error)
	DeleteAgent(ctx context.Context, name string, at time.Time) (found bool, revoked []string, err error)
	GrantAgentService(ctx context.Context, name, service string, at time.Time) (bool, error)
}

// viewAgent is an agent as the API shows it; token only when made.
func viewAgent(row state.AgentRow, token string) apiwire.Agent {
	svcs := slices.Clone(row.Services)
	slices.Sort(svcs) // a grant appends to the stored list
	return apiwire.Agent{
		Name:          row.Name,
		Token:         token,
		Services:      svcs,
		MaxSessionTTL: apiwire.FormatDuration(row.MaxSessionTTL),
		CreatedAt:     row.CreatedAt,
		UpdatedAt:     row.UpdatedAt,
	}
}

// checkAgentServices validates an agent's services: not empty, each an
// existing service, or "*" alone (identity.NormalizeAgentServices).
func (a *API) checkAgentServices(list []string) ([]string, error) {
	known := map[string]bool{}
	for _, s := range a.deps.catalog.Services().Services() {
		known[s.Name] = true
	}
	return identity.NormalizeAgentServices(list, func(n string) bool { return known[n] })
}

// parseAgentTTL reads an agent's max_session_ttl: 1s up to the app's
// max_session_ttl; empty is the app's.
func (a *API) parseAgentTTL(text string) (time.Duration, error) {
	var d time.Duration
	if text != "" {
		var err error
		if d, err = caddy.ParseDuration(text); err != nil {
			return 0, fail(http.StatusBadRequest, "max_session_ttl: %v", err)
		}
		if d <= 0 {
			return 0, fail(http.StatusBadRequest, "max_session_ttl must be at least 1s")
		}
	}
	return identity.AgentMaxTTL(d, a.deps.maxTTL)
}

func (a *API) listAgents(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := writeContext(r)
	defer cancel()
	rows, err := a.deps.ids.ListAgents(ctx)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	out := make([]apiwire.Agent, 0, len(rows))
	for _, row := range rows {
		out = append(out, viewAgent(row, ""))
	}
	writeJSON(w, http.StatusOK, apiwire.AgentList{Agents: out})
}

// findAgent reads one agent; a missing one is a 404 error.
func (a *API) findAgent(ctx context.Context, name string) (state.AgentRow, error) {
	row, ok, err := a.deps.ids.Agent(ctx, name)
	if err != nil {
		return state.AgentRow{}, err
	}
	if !ok {
		return state.AgentRow{}, fail(http.StatusNotFound, "no agent named %s", name)
	}
	return row, nil
}

func (a *API) getAgent(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := writeContext(r)
	defer cancel()
	row, err := a.findAgent(ctx, r.PathValue("name"))
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, viewAgent(row, ""))
}

func (a *API) createAgent(w http.ResponseWriter, r *http.Request) {
	var body apiwire.AgentCreateRequest
	if !readJSON(w, r, &body) {
		return
	}
	if err := identity.ValidName(identity.AgentName, body.Name); err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	svcs, err := a.checkAgentServices(body.Services)
	if err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	ttl, err := a.parseAgentTTL(body.MaxSessionTTL)
	if err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	token, hash, err := identity.NewToken(identity.KindAgent)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	now := a.now().UTC()
	row := state.AgentRow{Name: body.Name, TokenHash: hash, Services: svcs, MaxSessionTTL: ttl, CreatedAt: now, UpdatedAt: now}
	ctx, cancel := writeContext(r)
	defer cancel()
	if err := a.deps.ids.InsertAgent(ctx, row); err != nil {
		if errors.Is(err, state.ErrConflict) {
			err = fail(http.StatusConflict, "agent %s exists already", body.Name)
		}
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	a.logger.Info("agent created", zap.String("agent", row.Name), zap.Strings("services", svcs), zap.Duration("max_session_ttl", ttl))
	a.record(r, audit.AgentCreate, row.Name, agentDetail(row))
	writeJSON(w, http.StatusCreated, viewAgent(row, token))
}

// agentDetail is an agent's limits, for the audit trail.
func agentDetail(row state.AgentRow) string {
	return fmt.Sprintf("services %s max_session_ttl %s", strings.Join(row.Services, ","), apiwire.FormatDuration(row.MaxSessionTTL))
}

// patchAgent changes an agent's services or max_session_ttl; then its
// sessions no longer within the new limits are revoked (fail closed),
// and the answer lists them.
func (a *API) patchAgent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body apiwire.AgentPatchRequest
	if !readJSON(w, r, &body) {
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	row, err := a.findAgent(ctx, name)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	if body.Services != nil {
		if row.Services, err = a.checkAgentServices(body.Services); err != nil {
			writeFailure(w, err, http.StatusBadRequest)
			return
		}
	}
	if body.MaxSessionTTL != nil {
		if *body.MaxSessionTTL == "" {
			writeError(w, http.StatusBadRequest, "max_session_ttl: empty; give a duration such as \"1h\"")
			return
		}
		if row.MaxSessionTTL, err = a.parseAgentTTL(*body.MaxSessionTTL); err != nil {
			writeFailure(w, err, http.StatusBadRequest)
			return
		}
	}
	row.UpdatedAt = a.now().UTC()
	found, err := a.deps.ids.UpdateAgent(ctx, name, row.Services, row.MaxSessionTTL, row.UpdatedAt)
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no agent named %s", name)
	}
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	revoked, rerr := a.revokeBeyondLimits(ctx, r, row)
	detail := agentDetail(row)
	if len(revoked) > 0 {
		detail += fmt.Sprintf("; revoked %d sessions", len(revoked))
	}
	a.record(r, audit.AgentUpdate, name, detail)
	if rerr != nil {
		writeError(w, apiErrorStatus(rerr, http.StatusInternalServerError), fmt.Sprintf(
			"agent %s updated, but revoking its sessions beyond the new limits failed (%v); they are ended on this broker and the revocation is retried", name, rerr))
		return
	}
	out := viewAgent(row, "")
	out.RevokedSessions = revoked
	writeJSON(w, http.StatusOK, out)
}

// revokeBeyondLimits revokes the agent's active sessions that are no
// longer within its limits and returns their ids. Sessions are first
// brought in line with the store, so one made on another broker a
// moment ago is not missed.
func (a *API) revokeBeyondLimits(ctx context.Context, r *http.Request, row state.AgentRow) ([]string, error) {
	reg := a.deps.sessions
	if err := reg.Reload(ctx); err != nil {
		a.logger.Warn("reloading sessions before revoking an agent's out-of-limit sessions failed; using this broker's copy", zap.Error(err))
	}
	now := a.now()
	var revoked []string
	var errs []error
	for _, s := range reg.ByAgent(row.Name) {
		if !s.Active(now) {
			continue
		}
		if !beyondLimits(row, s, now) {
			continue
		}
		revoked = append(revoked, s.ID)
		if _, err := reg.Revoke(ctx, s.ID); err != nil {
			errs = append(errs, err)
		}
		a.record(r, audit.SessionRevoke, s.ID, "beyond agent "+row.Name+"'s new limits")
		a.logger.Info("session revoked: beyond its agent's new limits", zap.String("session", s.ID), zap.String("agent", row.Name))
	}
	return revoked, errors.Join(errs...)
}

// deleteAgent deletes the agent and, in the same transaction, revokes
// its sessions; then they end here at once (their tunnels close), and
// other brokers end them from the change feed.
func (a *API) deleteAgent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := writeContext(r)
	defer cancel()
	found, revoked, err := a.deps.ids.DeleteAgent(ctx, name, a.now().UTC())
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no agent named %s", name)
	}
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	// Revoked in the store already; here they end now rather than
	// when the feed delivers (sessions unknown here arrive revoked).
	ended := a.deps.sessions.EndAgent(name)
	ids := slices.Concat(revoked, ended)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	a.logger.Info("agent deleted", zap.String("agent", name), zap.Int("sessions_revoked", len(ids)))
	a.record(r, audit.AgentDelete, name, fmt.Sprintf("revoked %d sessions", len(ids)))
	for _, id := range ids {
		a.record(r, audit.SessionRevoke, id, "agent "+name+" deleted")
	}
	w.WriteHeader(http.StatusNoContent)
}

// rotateAgent gives the agent a new token; the old one is refused from
// the next request on, on every broker (the API reads the database on
// each request). The agent's sessions go on.
func (a *API) rotateAgent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	token, hash, err := identity.NewToken(identity.KindAgent)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	found, err := a.deps.ids.RotateAgentToken(ctx, name, hash, a.now().UTC())
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no agent named %s", name)
	}
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	row, err := a.findAgent(ctx, name)
	if err != nil {
		// Rotated, but deleted (or unreadable) right after: the new
		// token is still what the agent needs if it exists.
		a.logger.Warn("agent rotated but not read back", zap.String("agent", name), zap.Error(err))
		row = state.AgentRow{Name: name}
	}
	a.logger.Info("agent token rotated", zap.String("agent", name))
	a.record(r, audit.AgentRotate, name, "")
	writeJSON(w, http.StatusOK, viewAgent(row, token))
}
