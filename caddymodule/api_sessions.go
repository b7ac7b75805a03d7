package caddymodule

// Sessions: minting (by an agent within its limits, or by an operator
// or the admin token), listing, revoking, lease renewal, and the
// session's own view of itself (GET /api/v1/session).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// viewSession is a session as the API lists it: never its token. A
// session whose lease lapsed is revoked (the sweeper revokes it in the
// store within a second, and that is how every broker shows it).
func viewSession(s *sessions.Session, now time.Time) apiwire.SessionInfo {
	v := apiwire.SessionInfo{ID: s.ID, Services: s.Services, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt,
		Status: apiwire.SessionActive, Agent: s.Agent}
	switch {
	case !now.Before(s.ExpiresAt):
		v.Status = apiwire.SessionExpired
	case !s.Active(now):
		v.Status = apiwire.SessionRevoked
	}
	if until, ok := s.LeaseUntil(); ok {
		v.LeaseExpiresAt = &until
	}
	n, last := s.Activity()
	v.Requests = n
	if !last.IsZero() {
		v.LastUsed = &last
	}
	return v
}

// sessionAnswer is a session as POST /api/v1/sessions and GET
// /api/v1/session show it; token is set only in the first.
func (a *API) sessionAnswer(s *sessions.Session, token string) apiwire.Session {
	out := apiwire.Session{
		ID:           s.ID,
		Token:        token,
		ProxyURL:     a.deps.proxyURL,
		CAPEM:        string(a.deps.rootPEM()),
		ExpiresAt:    s.ExpiresAt,
		Services:     s.Services,
		Placeholders: s.Placeholders(),
		Agent:        s.Agent,
		// Every name, in scope or not: an agent token may not list
		// credentials, yet its launcher must keep inherited variables
		// of those names (real values, maybe) from the agent.
		CredentialNames: a.credentialNames(),
	}
	if until, ok := s.LeaseUntil(); ok {
		out.LeaseTimeout = apiwire.FormatDuration(s.LeaseTimeout)
		out.LeaseExpiresAt = &until
	}
	return out
}

// credentialNames is the name of every credential the broker knows,
// sorted as the set lists them.
func (a *API) credentialNames() []string {
	list := a.deps.creds.List()
	names := make([]string, 0, len(list))
	for _, m := range list {
		names = append(names, m.Name)
	}
	return names
}

// listSessions lists every session, or for an agent its own (OwnOnly):
// those of the agent's name made since the agent was (an older agent of
// the same name is someone else).
func (a *API) listSessions(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	now := a.now()
	var list []*sessions.Session
	if c.OwnOnly() {
		ctx, cancel := writeContext(r)
		defer cancel()
		agent, err := a.ownAgent(ctx, c)
		if err != nil {
			a.answerError(w, r, err)
			return
		}
		for _, s := range a.deps.sessions.ByAgent(agent.Name) {
			if ownedBy(s, agent) {
				list = append(list, s)
			}
		}
	} else {
		list = a.deps.sessions.List()
	}
	out := make([]apiwire.SessionInfo, 0, len(list))
	for _, s := range list {
		out = append(out, viewSession(s, now))
	}
	writeJSON(w, http.StatusOK, apiwire.SessionList{Sessions: out})
}

// ownedBy reports whether s is agent's own: of its name, and made since
// it was (a session of a deleted agent that had the same name is not).
func ownedBy(s *sessions.Session, agent state.AgentRow) bool {
	return s.Agent == agent.Name && !s.CreatedAt.Before(agent.CreatedAt)
}

// ownAgent is the agent whose own items an OwnOnly caller may see: the
// calling agent as it authenticated, or the calling session's agent,
// read now. A session of no agent, or whose agent is gone, has nothing
// of its own (403).
func (a *API) ownAgent(ctx context.Context, c *caller) (state.AgentRow, error) {
	switch {
	case c.Kind == identity.PrincipalAgent:
		return c.agent, nil
	case c.Agent == "":
		return state.AgentRow{}, fail(http.StatusForbidden,
			"this session belongs to no agent (it was minted with the admin token or an operator's login): it has no sessions or access requests of its own")
	}
	row, ok, err := a.deps.ids.Agent(ctx, c.Agent)
	if err != nil {
		return state.AgentRow{}, err
	}
	if !ok || (c.session != nil && c.session.CreatedAt.Before(row.CreatedAt)) {
		return state.AgentRow{}, fail(http.StatusForbidden, "agent %s of this session was deleted", c.Agent)
	}
	return row, nil
}

// ownSession answers GET /api/v1/session: the calling session as its
// holder needs it (proxy URL, CA, placeholders), without the token it
// already has.
func (a *API) ownSession(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.sessionAnswer(callerOf(r).session, ""))
}

func (a *API) postSession(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	var body apiwire.SessionRequest
	if !readJSON(w, r, &body) {
		return
	}
	spec, err := a.sessionSpec(c, body)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	sess, token, err := a.deps.sessions.Create(ctx, spec)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	detail := fmt.Sprintf("services %s ttl %s", strings.Join(sess.Services, ","), apiwire.FormatDuration(sess.ExpiresAt.Sub(sess.CreatedAt)))
	if sess.Leased() {
		detail += " lease " + apiwire.FormatDuration(sess.LeaseTimeout)
	}
	if c.Kind == identity.PrincipalAgent {
		if refusal := a.recheckAgentSession(ctx, c, sess); refusal != nil {
			// It existed, if only for a moment, and was revoked: both
			// are in the trail like any other session's.
			a.record(r, audit.SessionCreate, sess.ID, detail)
			_, why, _ := apiError(refusal)
			a.record(r, audit.SessionRevoke, sess.ID, "revoked at once: "+why)
			a.answerError(w, r, refusal)
			return
		}
	}
	a.logger.Info("session created", zap.String("session", sess.ID), zap.String("agent", sess.Agent),
		zap.Strings("services", sess.Services), zap.Time("expires_at", sess.ExpiresAt), zap.Duration("lease", sess.LeaseTimeout))
	a.record(r, audit.SessionCreate, sess.ID, detail)
	writeJSON(w, http.StatusCreated, a.sessionAnswer(sess, token))
}

// recheckAgentSession closes the race between minting and a change of
// the agent: the scope was checked against the agent as it was when
// the request came (c.agent), so once the session exists the agent is
// read again, and a session no longer within its limits (a PATCH
// committed in between, whose revocations could not see this session
// yet), of an agent deleted (and perhaps made again under the same
// name: its created_at differs), or minted with a token rotated
// meanwhile, is revoked before anyone learns its token. The refusal is
// returned; nil lets the session be.
func (a *API) recheckAgentSession(ctx context.Context, c *caller, sess *sessions.Session) error {
	row, ok, err := a.deps.ids.Agent(ctx, sess.Agent)
	var refusal error
	switch {
	case err != nil:
		refusal = err
	case !ok || !row.CreatedAt.Equal(c.agent.CreatedAt):
		refusal = fail(http.StatusForbidden, "agent %s was deleted", sess.Agent)
	case row.TokenHash != c.agent.TokenHash:
		refusal = fail(http.StatusForbidden, "agent %s's token was rotated while the session was being created; use the new token", sess.Agent)
	case beyondLimits(row, sess, a.now()):
		refusal = fail(http.StatusForbidden, "agent %s's limits changed while the session was being created; ask again", sess.Agent)
	default:
		return nil
	}
	if _, rerr := a.deps.sessions.Revoke(ctx, sess.ID); rerr != nil {
		a.logger.Warn("revoking a session minted across a change of its agent; retried", zap.String("session", sess.ID), zap.Error(rerr))
	}
	a.logger.Info("session revoked at once: its agent changed while it was being created", zap.String("session", sess.ID),
		zap.String("agent", sess.Agent), zap.Error(refusal))
	return refusal
}

// beyondLimits reports whether s exceeds its agent's limits as they
// are now (identity.OutOfLimits).
func beyondLimits(agent state.AgentRow, s *sessions.Session, now time.Time) bool {
	return identity.OutOfLimits(s.Services, s.ExpiresAt.Sub(now), agent.Services, agent.MaxSessionTTL)
}

// sessionSpec turns a request into the session to create, checking it
// against the caller. An agent gets a subset of its services (all it
// may use that exist now, when it names none) for at most its
// max_session_ttl (identity.SessionServices and SessionTTL say how and
// with which refusals); others any services. The server's
// max_session_ttl bounds everyone. An empty list is refused, so an
// unset variable cannot widen a session to everything. It does no I/O.
func (a *API) sessionSpec(c *caller, body apiwire.SessionRequest) (sessions.Spec, error) {
	var requested time.Duration
	if body.TTL != "" {
		d, err := caddy.ParseDuration(body.TTL)
		if err != nil {
			return sessions.Spec{}, fail(http.StatusBadRequest, "ttl: %v", err)
		}
		if d <= 0 {
			return sessions.Spec{}, fail(http.StatusBadRequest, "ttl must be between 1s and %s", apiwire.FormatDuration(a.deps.maxTTL))
		}
		requested = d
	}
	all := a.deps.catalog.Services().Services()
	known := make(map[string]services.Service, len(all))
	existing := make([]string, 0, len(all))
	for _, s := range all {
		known[s.Name] = s
		existing = append(existing, s.Name)
	}
	spec := sessions.Spec{NewPlaceholder: services.NewPlaceholder}
	var err error
	if c.Kind == identity.PrincipalAgent {
		spec.Agent = c.agent.Name
		if spec.TTL, err = identity.SessionTTL(c.agent.Name, requested, c.agent.MaxSessionTTL, a.deps.defaultTTL); err != nil {
			return sessions.Spec{}, err
		}
		if spec.Services, err = identity.SessionServices(c.agent.Name, body.Services, c.agent.Services, existing); err != nil {
			return sessions.Spec{}, err
		}
	} else {
		spec.TTL = a.deps.defaultTTL
		if requested != 0 {
			spec.TTL = requested
		}
		if spec.Services, err = identity.OperatorSessionServices(body.Services, existing); err != nil {
			return sessions.Spec{}, err
		}
	}
	// The agent's max may be above the server's after a config change.
	if spec.TTL > a.deps.maxTTL {
		return sessions.Spec{}, fail(http.StatusBadRequest, "ttl must be between 1s and %s", apiwire.FormatDuration(a.deps.maxTTL))
	}
	for _, n := range spec.Services {
		spec.Credentials = append(spec.Credentials, known[n].Credentials()...)
	}
	if body.Lease {
		spec.Lease = a.deps.leaseTimeout
	}
	return spec, nil
}

// ownedSession finds the session id for c: an OwnOnly caller sees only
// its agent's own sessions (ownedBy), and another's is answered as if
// it did not exist (404).
func (a *API) ownedSession(ctx context.Context, c *caller, id string) (*sessions.Session, error) {
	s, ok, err := a.deps.sessions.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.OwnOnly() {
		agent, err := a.ownAgent(ctx, c)
		if err != nil {
			return nil, err
		}
		if !ok || !ownedBy(s, agent) {
			return nil, fail(http.StatusNotFound, "no session %s", id)
		}
	}
	return s, nil
}

func (a *API) revokeSession(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	id := r.PathValue("id")
	ctx, cancel := writeContext(r)
	defer cancel()
	if _, err := a.ownedSession(ctx, c, id); err != nil {
		a.answerError(w, r, err)
		return
	}
	found, err := a.deps.sessions.Revoke(ctx, id)
	switch {
	case err != nil && found:
		// Ended here (its tunnels are closed), but other brokers may
		// not know: say so, so the operator retries.
		a.logger.Warn("session revoked on this broker only; recording it is retried", zap.String("session", id), zap.Error(err))
		a.record(r, audit.SessionRevoke, id, "on this broker; recording it cluster-wide is retried")
		writeError(w, http.StatusServiceUnavailable, "session "+id+" is revoked on this broker, but the revocation was not recorded cluster-wide yet (the state database is unavailable); this broker retries until it is, and revoking again is safe")
		return
	case err != nil:
		a.answerError(w, r, err)
		return
	case !found:
		writeError(w, http.StatusNotFound, "no session "+id)
		return
	}
	a.logger.Info("session revoked", zap.String("session", id))
	a.record(r, audit.SessionRevoke, id, "")
	w.WriteHeader(http.StatusNoContent)
}

// renewSession answers POST /api/v1/sessions/{id}/renew: 200 with the
// new lease end, 404 for no such session (or another agent's), 409 for
// a session without a lease, 410 for one that ended (its holder must
// stop: it will not come back).
func (a *API) renewSession(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	id := r.PathValue("id")
	ctx, cancel := writeContext(r)
	defer cancel()
	if _, err := a.ownedSession(ctx, c, id); err != nil {
		a.answerError(w, r, err)
		return
	}
	until, err := a.deps.sessions.Renew(ctx, id)
	// The registry's answers, said of this session.
	switch {
	case errors.Is(err, sessions.ErrUnknown):
		err = fail(http.StatusNotFound, "no session %s", id)
	case errors.Is(err, sessions.ErrNotLeased):
		err = fail(http.StatusConflict, "session %s has no lease: only sessions created with \"lease\": true are renewed", id)
	case errors.Is(err, sessions.ErrEnded):
		err = fail(http.StatusGone, "session %s has ended (revoked, expired or its lease lapsed); mint a new one", id)
	}
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apiwire.LeaseRenewal{ID: id, LeaseExpiresAt: until})
}
