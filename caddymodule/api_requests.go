package caddymodule

// Access requests: an agent asks for a service it is not allowed, or
// for a host no service covers yet; an operator approves (which grants
// it, creating the service if need be) or denies.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// requestStore is what the access request routes read and write.
type requestStore interface {
	InsertAccessRequest(ctx context.Context, r state.AccessRequestRow) error
	AccessRequest(ctx context.Context, id string) (state.AccessRequestRow, bool, error)
	ListAccessRequests(ctx context.Context, f state.AccessRequestFilter) ([]state.AccessRequestRow, error)
	PendingAccessRequest(ctx context.Context, agent, service, host string) (state.AccessRequestRow, bool, error)
	DecideAccessRequest(ctx context.Context, id, status, by, reason string, at time.Time) (state.AccessRequestRow, bool, error)
}

// maxReason bounds the reason of a request or a denial, in characters.
const maxReason = 500

// checkReason refuses a reason too long or with control characters
// (it is shown to operators, in terminals too).
func checkReason(field, s string) error {
	if !utf8.ValidString(s) {
		return fail(http.StatusBadRequest, "%s: not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(s); n > maxReason {
		return fail(http.StatusBadRequest, "%s: %d characters, at most %d", field, n, maxReason)
	}
	for _, c := range s {
		if !unicode.IsPrint(c) && c != ' ' {
			return fail(http.StatusBadRequest, "%s: holds a control or non-printable character", field)
		}
	}
	return nil
}

func viewRequest(r state.AccessRequestRow) apiwire.AccessRequest {
	return apiwire.AccessRequest{
		ID: r.ID, Agent: r.Agent, Session: r.Session, Service: r.Service, Host: r.Host, Reason: r.Reason,
		Status: r.Status, CreatedAt: r.CreatedAt, DecidedAt: r.DecidedAt, DecidedBy: r.DecidedBy, DecisionReason: r.DecisionReason,
	}
}

// requestHost is a requested host in the form stored and shown: the
// normalized name, with its port only when not 443.
func requestHost(raw string) (host string, port int, shown string, err error) {
	host, port, err = hostname.Normalize(raw, 443)
	if err != nil {
		return "", 0, "", fail(http.StatusBadRequest, "host: %v", err)
	}
	shown = host
	if port != 443 {
		shown = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return host, port, shown, nil
}

// coveringService returns the service the table would pick for an
// HTTPS request to host:port, if any.
func coveringService(t *services.Table, host string, port int) (string, bool) {
	var name string
	// inScope is asked of each candidate whose host and port match, in
	// the table's order; the first answered true is the match.
	ok := t.AllowsHost(host, port, true, func(n string) bool { name = n; return true })
	return name, ok
}

// createRequest files an access request for the calling agent (or the
// calling session's agent). A pending request for the same thing is
// answered again (200) instead of filed twice (201).
func (a *API) createRequest(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	var body apiwire.AccessRequestCreate
	if !readJSON(w, r, &body) {
		return
	}
	if (body.Service == "") == (body.Host == "") {
		writeError(w, http.StatusBadRequest, `give exactly one of "service" (an existing service) and "host" (a host no service covers yet)`)
		return
	}
	if err := checkReason("reason", body.Reason); err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	agent, err := a.askingAgent(ctx, c)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	row := state.AccessRequestRow{Agent: agent.Name, Service: body.Service, Reason: body.Reason, Status: apiwire.RequestPending}
	if c.session != nil {
		row.Session = c.session.ID
	}
	if body.Service != "" {
		if !services.IsValidName(body.Service) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid service name %q", body.Service))
			return
		}
		if _, ok := serviceNamed(a.deps.catalog.Services(), body.Service); !ok {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown service %q: to ask for a host no service covers, send {\"host\":\"...\"}", body.Service))
			return
		}
		if identity.Covers(agent.Services, body.Service) {
			writeError(w, http.StatusConflict, fmt.Sprintf("agent %s is already allowed service %s: mint a session that names it", agent.Name, body.Service))
			return
		}
	} else {
		_, _, shown, err := requestHost(body.Host)
		if err != nil {
			writeFailure(w, err, http.StatusBadRequest)
			return
		}
		row.Host = shown
	}
	if prev, ok, err := a.deps.ids.PendingAccessRequest(ctx, row.Agent, row.Service, row.Host); err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	} else if ok {
		writeJSON(w, http.StatusOK, viewRequest(prev))
		return
	}
	if row.ID, err = newRequestID(); err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	row.CreatedAt = a.now().UTC()
	if err := a.deps.ids.InsertAccessRequest(ctx, row); err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	a.logger.Info("access request filed", zap.String("request", row.ID), zap.String("agent", row.Agent),
		zap.String("service", row.Service), zap.String("host", row.Host))
	a.record(r, audit.RequestCreate, row.ID, requestDetail(row))
	writeJSON(w, http.StatusCreated, viewRequest(row))
}

// requestDetail says what a request asks for, for the audit trail.
func requestDetail(row state.AccessRequestRow) string {
	if row.Service != "" {
		return "agent " + row.Agent + " service " + row.Service
	}
	return "agent " + row.Agent + " host " + row.Host
}

// askingAgent is the agent a request is filed for: the calling agent,
// or the calling session's, read now (its services decide whether the
// ask is needed at all).
func (a *API) askingAgent(ctx context.Context, c *caller) (state.AgentRow, error) {
	if c.Kind == identity.PrincipalAgent {
		return c.agent, nil
	}
	if c.Agent == "" {
		return state.AgentRow{}, fail(http.StatusForbidden,
			"this session belongs to no agent (it was minted with the admin token or an operator's login): access requests are filed by an agent; ask an operator directly")
	}
	row, ok, err := a.deps.ids.Agent(ctx, c.Agent)
	if err != nil {
		return state.AgentRow{}, err
	}
	if !ok {
		return state.AgentRow{}, fail(http.StatusForbidden, "agent %s of this session no longer exists", c.Agent)
	}
	return row, nil
}

// newRequestID is "req_" and 24 hex digits (96 random bits).
func newRequestID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "req_" + hex.EncodeToString(b), nil
}

// listRequests lists access requests, newest first: an agent's (or a
// session's agent's) own, or for operators everyone's, optionally of
// one agent (?agent=). ?status= picks pending, approved or denied;
// ?limit= is 1..1000 (default 100).
func (a *API) listRequests(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	q := r.URL.Query()
	f := state.AccessRequestFilter{Agent: q.Get("agent"), Status: q.Get("status")}
	switch f.Status {
	case "", apiwire.RequestPending, apiwire.RequestApproved, apiwire.RequestDenied:
	default:
		writeError(w, http.StatusBadRequest, "status: want pending, approved or denied")
		return
	}
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	f.Limit = limit
	switch c.Kind {
	case identity.PrincipalAgent, identity.PrincipalSession:
		if c.Agent == "" {
			// A session of no agent has no requests of its own.
			writeJSON(w, http.StatusOK, apiwire.AccessRequestList{Requests: []apiwire.AccessRequest{}})
			return
		}
		f.Agent = c.Agent
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	rows, err := a.deps.ids.ListAccessRequests(ctx, f)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	out := make([]apiwire.AccessRequest, 0, len(rows))
	for _, row := range rows {
		out = append(out, viewRequest(row))
	}
	writeJSON(w, http.StatusOK, apiwire.AccessRequestList{Requests: out})
}

// pageLimit reads ?limit=: 1..1000, default 100.
func pageLimit(text string) (int, error) {
	if text == "" {
		return state.DefaultPageLimit, nil
	}
	n, err := strconv.Atoi(text)
	if err != nil || n < 1 || n > state.MaxPageLimit {
		return 0, fail(http.StatusBadRequest, "limit: want a number from 1 to %d", state.MaxPageLimit)
	}
	return n, nil
}

// pendingRequest reads a request that is to be decided: 404 if there
// is none, 409 if it was decided already.
func (a *API) pendingRequest(ctx context.Context, id string) (state.AccessRequestRow, error) {
	row, ok, err := a.deps.ids.AccessRequest(ctx, id)
	switch {
	case err != nil:
		return row, err
	case !ok:
		return row, fail(http.StatusNotFound, "no access request %s", id)
	case row.Status != apiwire.RequestPending:
		return row, fail(http.StatusConflict, "access request %s is %s already", id, row.Status)
	}
	return row, nil
}

// decide marks a pending request decided; another decision that came
// first is 409.
func (a *API) decide(ctx context.Context, c *caller, id, status, reason string) (state.AccessRequestRow, error) {
	row, found, err := a.deps.ids.DecideAccessRequest(ctx, id, status, c.Name, reason, a.now().UTC())
	switch {
	case errors.Is(err, state.ErrConflict):
		return row, fail(http.StatusConflict, "access request %s was decided already", id)
	case err != nil:
		return row, err
	case !found:
		return row, fail(http.StatusNotFound, "no access request %s", id)
	}
	return row, nil
}

// approveRequest grants what a request asks for: the named service, or
// for a host the service in the body (created, validated before
// anything is written) or else the existing service that covers it.
// The service is added to the agent's services (nothing to add for an
// agent allowed every service); its next session may include it.
//
// The decision is written first, so that of two operators deciding at
// once only one wins, and a denial cannot be overtaken by a grant; if
// granting then fails, the request stays approved and the answer says
// how to finish by hand.
func (a *API) approveRequest(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	id := r.PathValue("id")
	var body apiwire.AccessRequestApprove
	if !readOptionalJSON(w, r, &body) {
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	req, err := a.pendingRequest(ctx, id)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	grant, create, err := a.grantFor(req, body.Service)
	if err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	agent, err := a.findAgent(ctx, req.Agent)
	if err != nil {
		if apiErrorStatus(err, 0) == http.StatusNotFound {
			err = fail(http.StatusConflict, "agent %s of access request %s no longer exists; deny the request", req.Agent, id)
		}
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	decided, err := a.decide(ctx, c, id, apiwire.RequestApproved, "")
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	if create != nil {
		if _, err := a.storeService(r, *create, "for access request "+id); err != nil {
			a.grantFailed(w, id, agent.Name, grant, err)
			return
		}
	}
	if !slices.Contains(agent.Services, identity.AllServices) {
		found, err := a.deps.ids.GrantAgentService(ctx, agent.Name, grant, a.now().UTC())
		if err == nil && !found {
			err = fmt.Errorf("agent %s no longer exists", agent.Name)
		}
		if err != nil {
			a.grantFailed(w, id, agent.Name, grant, err)
			return
		}
	}
	a.logger.Info("access request approved", zap.String("request", id), zap.String("agent", agent.Name), zap.String("service", grant))
	a.record(r, audit.RequestApprove, id, "granted service "+grant+" to agent "+agent.Name)
	writeJSON(w, http.StatusOK, viewRequest(decided))
}

// grantFailed answers an approval whose grant did not complete.
func (a *API) grantFailed(w http.ResponseWriter, id, agent, service string, err error) {
	a.logger.Error("access request approved but not granted", zap.String("request", id), zap.String("agent", agent),
		zap.String("service", service), zap.Error(err))
	writeError(w, apiErrorStatus(err, http.StatusInternalServerError), fmt.Sprintf(
		"access request %s is approved, but granting service %s to agent %s failed (%v): finish with PATCH /api/v1/agents/%s",
		id, service, agent, err, agent))
}

// grantFor decides what approving req grants: the service name, and
// the service to create first, if any. It does no I/O, so nothing is
// written for a request it refuses.
func (a *API) grantFor(req state.AccessRequestRow, def *services.Service) (string, *services.Service, error) {
	table := a.deps.catalog.Services()
	if req.Service != "" {
		if def != nil {
			return "", nil, fail(http.StatusBadRequest, "access request %s asks for the existing service %s: approve it without a service definition", req.ID, req.Service)
		}
		if _, ok := serviceNamed(table, req.Service); !ok {
			return "", nil, fail(http.StatusConflict, "service %s of access request %s no longer exists; deny the request, or define the service first", req.Service, req.ID)
		}
		return req.Service, nil, nil
	}
	host, port, _, err := requestHost(req.Host)
	if err != nil {
		return "", nil, err
	}
	if def == nil {
		name, ok := coveringService(table, host, port)
		if !ok {
			return "", nil, fail(http.StatusBadRequest, `no service covers %s yet: approve with {"service": {...}}, the full definition of a service to create for it`, req.Host)
		}
		return name, nil, nil
	}
	svc := *def
	if err := svc.Validate(); err != nil {
		return "", nil, fail(http.StatusBadRequest, "service: %v", err)
	}
	if _, exists := serviceNamed(table, svc.Name); exists {
		return "", nil, fail(http.StatusConflict, "service %s exists already: approve without a definition to grant the service that covers %s, or choose another name", svc.Name, req.Host)
	}
	one, err := services.NewTable([]services.Service{svc})
	if err != nil {
		return "", nil, fail(http.StatusBadRequest, "service: %v", err)
	}
	if _, ok := coveringService(one, host, port); !ok {
		return "", nil, fail(http.StatusBadRequest, "service %s (host %s) does not cover the requested host %s", svc.Name, svc.Host, req.Host)
	}
	return svc.Name, &svc, nil
}

func (a *API) denyRequest(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	id := r.PathValue("id")
	var body apiwire.AccessRequestDeny
	if !readOptionalJSON(w, r, &body) {
		return
	}
	if err := checkReason("reason", body.Reason); err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	if _, err := a.pendingRequest(ctx, id); err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	decided, err := a.decide(ctx, c, id, apiwire.RequestDenied, body.Reason)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	a.logger.Info("access request denied", zap.String("request", id), zap.String("agent", decided.Agent))
	detail := requestDetail(decided)
	a.record(r, audit.RequestDeny, id, detail)
	writeJSON(w, http.StatusOK, viewRequest(decided))
}

// serviceNamed returns the named service of t.
func serviceNamed(t *services.Table, name string) (services.Service, bool) {
	for _, s := range t.Services() {
		if s.Name == name {
			return s, true
		}
	}
	return services.Service{}, false
}
