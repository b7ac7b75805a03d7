package caddymodule

// Sessions: minting (by an agent within its limits, or by an operator
// or the admin token), listing, revoking, lease renewal, and the
// session's own view of itself (GET /api/v1/session).

import (
	"context"
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

// listSessions lists every session, or for an agent its own.
func (a *API) listSessions(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	now := a.now()
	var list []*sessions.Session
	if c.Kind == identity.PrincipalAgent {
		list = a.deps.sessions.ByAgent(c.agent.Name)
	} else {
		list = a.deps.sessions.List()
	}
	out := make([]apiwire.SessionInfo, 0, len(list))
	for _, s := range list {
		out = append(out, viewSession(s, now))
	}
	writeJSON(w, http.StatusOK, apiwire.SessionList{Sessions: out})
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
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	sess, token, err := a.deps.sessions.Create(ctx, spec)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	if c.Kind == identity.PrincipalAgent {
		if err := a.recheckAgentSession(ctx, sess); err != nil {
			writeFailure(w, err, http.StatusInternalServerError)
			return
		}
	}
	a.logger.Info("session created", zap.String("session", sess.ID), zap.String("agent", sess.Agent),
		zap.Strings("services", sess.Services), zap.Time("expires_at", sess.ExpiresAt), zap.Duration("lease", sess.LeaseTimeout))
	detail := fmt.Sprintf("services %s ttl %s", strings.Join(sess.Services, ","), apiwire.FormatDuration(sess.ExpiresAt.Sub(sess.CreatedAt)))
	if sess.Leased() {
		detail += " lease " + apiwire.FormatDuration(sess.LeaseTimeout)
	}
	a.record(r, audit.SessionCreate, sess.ID, detail)
	writeJSON(w, http.StatusCreated, a.sessionAnswer(sess, token))
}

// recheckAgentSession closes the race between minting and a change of
// the agent: the scope was checked against the agent as it was when
// the request came, so once the session exists the agent is read
// again, and a session no longer within its limits (a PATCH or DELETE
// committed in between, whose revocations could not see this session
// yet) is revoked before anyone learns its token.
func (a *API) recheckAgentSession(ctx context.Context, sess *sessions.Session) error {
	row, ok, err := a.deps.ids.Agent(ctx, sess.Agent)
	var refusal error
	switch {
	case err != nil:
		refusal = err
	case !ok:
		refusal = fail(http.StatusForbidden, "agent %s was deleted while the session was being created", sess.Agent)
	case beyondLimits(row, sess, a.now()):
		refusal = fail(http.StatusForbidden, "agent %s's limits changed while the session was being created; ask again", sess.Agent)
	default:
		return nil
	}
	if _, rerr := a.deps.sessions.Revoke(ctx, sess.ID); rerr != nil {
		a.logger.Warn("revoking a session minted across a change of its agent; retried", zap.String("session", sess.ID), zap.Error(rerr))
	}
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
		if spec.Services, err = operatorSessionServices(body.Services, existing); err != nil {
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

// operatorSessionServices is the scope of a session an operator or the
// admin token mints: nil is every service defined now (the scope never
// grows afterwards), an empty list is refused, each name must exist.
func operatorSessionServices(requested, existing []string) ([]string, error) {
	switch {
	case requested == nil:
		return existing, nil
	case len(requested) == 0:
		return nil, fail(http.StatusBadRequest, `"services" is empty: name at least one service, or omit it for all services`)
	}
	out := slices.Clone(requested)
	slices.Sort(out)
	out = slices.Compact(out)
	for _, n := range out {
		if !slices.Contains(existing, n) {
			return nil, fail(http.StatusBadRequest, "unknown service %q", n)
		}
	}
	return out, nil
}

// ownedSession finds the session id for c: an agent sees only its own
// sessions, and another's is answered as if it did not exist (404).
func (a *API) ownedSession(ctx context.Context, c *caller, id string) (*sessions.Session, error) {
	s, ok, err := a.deps.sessions.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.Kind == identity.PrincipalAgent && (!ok || s.Agent != c.agent.Name) {
		return nil, fail(http.StatusNotFound, "no session %s", id)
	}
	return s, nil
}

func (a *API) revokeSession(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	id := r.PathValue("id")
	ctx, cancel := writeContext(r)
	defer cancel()
	if _, err := a.ownedSession(ctx, c, id); err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	found, err := a.deps.sessions.Revoke(ctx, id)
	switch {
	case err != nil && found:
		// Ended here (its tunnels are closed), but other brokers may
		// not know: say so, so the operator retries.
		a.logger.Warn("session revoked on this broker only; recording it is retried", zap.String("session", id), zap.Error(err))
		a.record(r, audit.SessionRevoke, id, "on this broker; recording it cluster-wide is retried")
		writeError(w, http.StatusServiceUnavailable, "session "+id+" is revoked on this broker, but the revocation was not recorded cluster-wide yet ("+err.Error()+"); this broker retries until it is, and revoking again is safe")
		return
	case err != nil:
		writeFailure(w, err, http.StatusInternalServerError)
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
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	until, err := a.deps.sessions.Renew(ctx, id)
	switch status := apiErrorStatus(err, http.StatusInternalServerError); {
	case err == nil:
		writeJSON(w, http.StatusOK, apiwire.LeaseRenewal{ID: id, LeaseExpiresAt: until})
	case status == http.StatusNotFound:
		writeError(w, status, "no session "+id)
	case status == http.StatusConflict:
		writeError(w, status, "session "+id+` has no lease: only sessions created with "lease": true are renewed`)
	case status == http.StatusGone:
		writeError(w, status, "session "+id+" has ended (revoked, expired or its lease lapsed); mint a new one")
	default:
		writeError(w, status, err.Error())
	}
}
