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
	UpdateAgent(ctx context.Context, name string, services []string, maxTTL time.Duration, at time.Time) (state.AgentRow, bool, error)
	RotateAgentToken(ctx context.Context, name string, hash [32]byte, at time.Time, revokeSessions bool) (state.AgentRow, bool, []string, error)
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
		a.answerError(w, r, err)
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
		a.answerError(w, r, err)
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
		a.answerError(w, r, err)
		return
	}
	svcs, err := a.checkAgentServices(body.Services)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	ttl, err := a.parseAgentTTL(body.MaxSessionTTL)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	token, hash, err := identity.NewToken(identity.KindAgent)
	if err != nil {
		a.answerError(w, r, err)
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
		a.answerError(w, r, err)
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

// patchAgent changes an agent's services or max_session_ttl (the body
// is checked first, before anything is read); the fields not given are
// left as stored, so a concurrent change of them (a narrowing, an
// approval's grant) is not undone. Then the agent's sessions no longer
// within its limits as the update committed them are revoked (fail
// closed), and the answer lists them. If the sessions could not be
// brought in line with the store first, or a revocation could not be
// recorded, the answer is 503 (the change stands; a retry of the PATCH
// finishes the job).
func (a *API) patchAgent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body apiwire.AgentPatchRequest
	if !readJSON(w, r, &body) {
		return
	}
	var services []string
	var ttl time.Duration
	var err error
	if body.Services != nil {
		if services, err = a.checkAgentServices(body.Services); err != nil {
			a.answerError(w, r, err)
			return
		}
	}
	if body.MaxSessionTTL != nil {
		if *body.MaxSessionTTL == "" {
			writeError(w, http.StatusBadRequest, "max_session_ttl: empty; give a duration such as \"1h\"")
			return
		}
		if ttl, err = a.parseAgentTTL(*body.MaxSessionTTL); err != nil {
			a.answerError(w, r, err)
			return
		}
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	row, found, err := a.deps.ids.UpdateAgent(ctx, name, services, ttl, a.now().UTC())
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no agent named %s", name)
	}
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	revoked, rerr := a.revokeBeyondLimits(ctx, r, row)
	detail := agentDetail(row)
	if len(revoked) > 0 {
		detail += fmt.Sprintf("; revoked %d sessions", len(revoked))
	}
	a.record(r, audit.AgentUpdate, name, detail)
	if rerr != nil {
		a.logger.Error("agent updated, but its sessions beyond the new limits may not all be revoked", zap.String("agent", name),
			zap.Strings("revoked", revoked), zap.Error(rerr))
		a.answerError(w, r, fail(http.StatusServiceUnavailable, "agent %s updated, but %s; retry the PATCH", name, rerr))
		return
	}
	out := viewAgent(row, "")
	out.RevokedSessions = revoked
	writeJSON(w, http.StatusOK, out)
}

// revokeBeyondLimits revokes the agent's active sessions that are no
// longer within its limits (row, as committed) and returns the ids of
// those revoked everywhere. The sessions are first brought in line with
// the store, so one made on another broker a moment ago is not missed;
// if that fails, the error says so (this broker's copy is still gone
// through, fail closed). A session ended here whose revocation could
// not be recorded in the store is not among those returned (the
// registry retries recording it), and the error names it.
func (a *API) revokeBeyondLimits(ctx context.Context, r *http.Request, row state.AgentRow) ([]string, error) {
	reg := a.deps.sessions
	var errs []error
	if err := reg.Reload(ctx); err != nil {
		a.logger.Warn("reloading sessions before revoking an agent's out-of-limit sessions failed; using this broker's copy", zap.Error(err))
		errs = append(errs, errors.New("its sessions could not be checked on every broker"))
	}
	now := a.now()
	var revoked, unrecorded []string
	for _, s := range reg.ByAgent(row.Name) {
		if !s.Active(now) || !beyondLimits(row, s, now) {
			continue
		}
		if _, err := reg.Revoke(ctx, s.ID); err != nil {
			unrecorded = append(unrecorded, s.ID)
			a.record(r, audit.SessionRevoke, s.ID, "beyond agent "+row.Name+"'s new limits; on this broker only, recording it cluster-wide is retried")
			continue
		}
		revoked = append(revoked, s.ID)
		a.record(r, audit.SessionRevoke, s.ID, "beyond agent "+row.Name+"'s new limits")
		a.logger.Info("session revoked: beyond its agent's new limits", zap.String("session", s.ID), zap.String("agent", row.Name))
	}
	if len(unrecorded) > 0 {
		errs = append(errs, fmt.Errorf("sessions %s are ended on this broker but their revocation is not recorded for the others yet (retried)", strings.Join(unrecorded, ", ")))
	}
	if len(errs) == 0 {
		return revoked, nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return revoked, errors.New(strings.Join(msgs, ", and "))
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
		a.answerError(w, r, err)
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
// each request). Without ?revoke_sessions=true the agent's existing
// sessions live on until their TTL ends or their lease lapses (a
// session token is not the agent token); with it, they are revoked in
// the same transaction (audited each), as when the token leaked.
func (a *API) rotateAgent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var revoke bool
	switch v := r.URL.Query()["revoke_sessions"]; {
	case len(v) == 0:
	case len(v) == 1 && v[0] == "true":
		revoke = true
	case len(v) == 1 && v[0] == "false":
	default:
		writeError(w, http.StatusBadRequest, "revoke_sessions: want true or false")
		return
	}
	token, hash, err := identity.NewToken(identity.KindAgent)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	row, found, revoked, err := a.deps.ids.RotateAgentToken(ctx, name, hash, a.now().UTC(), revoke)
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no agent named %s", name)
	}
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	detail := "sessions kept"
	if revoke {
		// Revoked in the store already; here they end now rather than
		// when the feed delivers.
		ids := slices.Concat(revoked, a.deps.sessions.EndAgent(name))
		slices.Sort(ids)
		revoked = slices.Compact(ids)
		detail = fmt.Sprintf("revoked %d sessions", len(revoked))
	}
	a.logger.Info("agent token rotated", zap.String("agent", name), zap.Int("sessions_revoked", len(revoked)))
	a.record(r, audit.AgentRotate, name, detail)
	for _, id := range revoked {
		a.record(r, audit.SessionRevoke, id, "agent "+name+"'s token rotated")
	}
	out := viewAgent(row, token)
	out.RevokedSessions = revoked
	writeJSON(w, http.StatusOK, out)
}
