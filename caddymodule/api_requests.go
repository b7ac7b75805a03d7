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
	"strings"
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
	InsertAccessRequest(ctx context.Context, r state.AccessRequestRow, agentCreatedAt time.Time, maxPending int) error
	AccessRequest(ctx context.Context, id string) (state.AccessRequestRow, bool, error)
	ListAccessRequests(ctx context.Context, f state.AccessRequestFilter) ([]state.AccessRequestRow, error)
	PendingAccessRequest(ctx context.Context, agent, service, host string) (state.AccessRequestRow, bool, error)
	DecideAccessRequest(ctx context.Context, id, status, by, reason string, at time.Time) (state.AccessRequestRow, bool, error)
}

// maxReason bounds the reason of a request or a denial, in characters.
const maxReason = 500

// maxPendingRequests bounds an agent's pending access requests: an
// agent cannot fill the operators' queue (nor the database). Pending
// requests older than audit_retention expire with the decided ones.
const maxPendingRequests = 20

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

// coveringServices returns the services that cover an HTTPS request to
// host:port, for some path, in the table's order (the most specific
// host first).
func coveringServices(t *services.Table, host string, port int) []string {
	var names []string
	// inScope is asked of each candidate whose host and port match;
	// answering false goes on to the next.
	t.AllowsHost(host, port, true, func(n string) bool { names = append(names, n); return false })
	return names
}

// createRequest files an access request for the calling agent (or the
// calling session's agent). The body is checked before anything is
// read. A pending request for the same thing is answered again (200)
// instead of filed twice (201); an agent with maxPendingRequests
// pending already is refused (429). The request is stored only if the
// agent is still the one that called (not deleted, nor made again
// under its name, meanwhile).
func (a *API) createRequest(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	var body apiwire.AccessRequestCreate
	if !readJSON(w, r, &body) {
		return
	}
	row := state.AccessRequestRow{Service: body.Service, Reason: body.Reason, Status: apiwire.RequestPending}
	if err := a.checkRequestBody(body, &row); err != nil {
		a.answerError(w, r, err)
		return
	}
	if !c.OwnOnly() {
		// Allowed lets only agents and their sessions through.
		a.answerError(w, r, fail(http.StatusForbidden, "only an agent, or its session, files access requests"))
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	agent, err := a.ownAgent(ctx, c)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	row.Agent = agent.Name
	if c.session != nil {
		row.Session = c.session.ID
	}
	if row.Service != "" && identity.Covers(agent.Services, row.Service) {
		writeError(w, http.StatusConflict, fmt.Sprintf("agent %s is already allowed service %s: mint a session that names it", agent.Name, row.Service))
		return
	}
	if prev, ok, err := a.deps.ids.PendingAccessRequest(ctx, row.Agent, row.Service, row.Host); err != nil {
		a.answerError(w, r, err)
		return
	} else if ok && !prev.CreatedAt.Before(agent.CreatedAt) {
		writeJSON(w, http.StatusOK, viewRequest(prev))
		return
	}
	if row.ID, err = newRequestID(); err != nil {
		a.answerError(w, r, err)
		return
	}
	row.CreatedAt = a.now().UTC()
	err = a.deps.ids.InsertAccessRequest(ctx, row, agent.CreatedAt, maxPendingRequests)
	switch {
	case errors.Is(err, state.ErrAgentGone):
		err = fail(http.StatusForbidden, "agent %s was deleted", agent.Name)
	case errors.Is(err, state.ErrTooManyPending):
		err = fail(http.StatusTooManyRequests, "agent %s has %d pending access requests; wait for an operator", agent.Name, maxPendingRequests)
	}
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	a.logger.Info("access request filed", zap.String("request", row.ID), zap.String("agent", row.Agent),
		zap.String("service", row.Service), zap.String("host", row.Host))
	a.record(r, audit.RequestCreate, row.ID, requestDetail(row))
	writeJSON(w, http.StatusCreated, viewRequest(row))
}

// checkRequestBody checks a new request's body without any I/O (the
// services are in memory) and sets row's host to the form stored.
func (a *API) checkRequestBody(body apiwire.AccessRequestCreate, row *state.AccessRequestRow) error {
	if (body.Service == "") == (body.Host == "") {
		return fail(http.StatusBadRequest, `give exactly one of "service" (an existing service) and "host" (a host no service covers yet)`)
	}
	if err := checkReason("reason", body.Reason); err != nil {
		return err
	}
	if body.Service != "" {
		if !services.IsValidName(body.Service) {
			return fail(http.StatusBadRequest, "invalid service name %q", body.Service)
		}
		if _, ok := serviceNamed(a.deps.catalog.Services(), body.Service); !ok {
			return fail(http.StatusBadRequest, "unknown service %q: to ask for a host no service covers, send {\"host\":\"...\"}", body.Service)
		}
		return nil
	}
	_, _, shown, err := requestHost(body.Host)
	if err != nil {
		return err
	}
	row.Host = shown
	return nil
}

// requestDetail says what a request asks for, for the audit trail.
func requestDetail(row state.AccessRequestRow) string {
	if row.Service != "" {
		return "agent " + row.Agent + " service " + row.Service
	}
	return "agent " + row.Agent + " host " + row.Host
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
// session's agent's) own (OwnOnly: of its name and since it was made),
// or for operators everyone's, optionally of one agent (?agent=). ?status= picks pending, approved or denied;
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
		a.answerError(w, r, err)
		return
	}
	f.Limit = limit
	ctx, cancel := writeContext(r)
	defer cancel()
	if c.OwnOnly() {
		agent, err := a.ownAgent(ctx, c)
		if err != nil {
			a.answerError(w, r, err)
			return
		}
		// Its own: of its name, and filed since it was made.
		f.Agent, f.Since = agent.Name, agent.CreatedAt
	}
	rows, err := a.deps.ids.ListAccessRequests(ctx, f)
	if err != nil {
		a.answerError(w, r, err)
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
// for a host the service defined in the body (created; validated before
// anything is read or written), the existing one the body names
// ("grant"), or else the one existing service that covers the host
// (several: refused, naming them, so that the approver chooses). The
// service is added to the agent's services (nothing to add for an agent
// allowed every service); its next session may include it. The answer
// says which service was granted.
//
// The decision is written first, so that of two operators deciding at
// once only one wins, and a denial cannot be overtaken by a grant; it is
// audited right after the grant was tried, with its outcome: if granting
// fails, the request stays approved and the answer says how to finish
// by hand.
func (a *API) approveRequest(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	id := r.PathValue("id")
	var body apiwire.AccessRequestApprove
	if !readOptionalJSON(w, r, &body) {
		return
	}
	if err := checkApproveBody(body); err != nil {
		a.answerError(w, r, err)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	req, err := a.pendingRequest(ctx, id)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	grant, create, err := a.grantFor(req, body.Service, body.Grant)
	if status, _, _ := apiError(err); err != nil && status == http.StatusConflict {
		// The service may have been defined on another broker a moment
		// ago, before the change feed brought it here: read the
		// catalog from the database once and decide again.
		if rerr := a.deps.catalog.Reload(ctx); rerr == nil {
			grant, create, err = a.grantFor(req, body.Service, body.Grant)
		}
	}
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	agent, ok, err := a.deps.ids.Agent(ctx, req.Agent)
	if err == nil && (!ok || req.CreatedAt.Before(agent.CreatedAt)) {
		err = fail(http.StatusConflict, "agent %s of access request %s no longer exists; deny the request", req.Agent, id)
	}
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	decided, err := a.decide(ctx, c, id, apiwire.RequestApproved, "")
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	gerr := a.grant(ctx, r, id, agent, grant, create)
	detail := "granted service " + grant + " to agent " + agent.Name
	if gerr != nil {
		_, text, _ := apiError(gerr)
		detail = "approved, but granting service " + grant + " to agent " + agent.Name + " failed: " + text
	}
	a.record(r, audit.RequestApprove, id, detail)
	if gerr != nil {
		a.logger.Error("access request approved but not granted", zap.String("request", id), zap.String("agent", agent.Name),
			zap.String("service", grant), zap.Error(gerr))
		status, text, _ := apiError(gerr)
		writeError(w, status, fmt.Sprintf("access request %s is approved, but granting service %s to agent %s failed (%s): finish with PATCH /api/v1/agents/%s",
			id, grant, agent.Name, text, agent.Name))
		return
	}
	a.logger.Info("access request approved", zap.String("request", id), zap.String("agent", agent.Name), zap.String("service", grant))
	out := viewRequest(decided)
	out.Granted = grant
	writeJSON(w, http.StatusOK, out)
}

// grant creates the service create, if any, and adds service to the
// agent's services (nothing to add for an agent allowed every service).
func (a *API) grant(ctx context.Context, r *http.Request, id string, agent state.AgentRow, service string, create *services.Service) error {
	if create != nil {
		if _, err := a.storeService(r, *create, "for access request "+id); err != nil {
			return err
		}
	}
	if slices.Contains(agent.Services, identity.AllServices) {
		return nil
	}
	found, err := a.deps.ids.GrantAgentService(ctx, agent.Name, service, a.now().UTC())
	if err == nil && !found {
		err = fail(http.StatusConflict, "agent %s no longer exists", agent.Name)
	}
	return err
}

// checkApproveBody checks an approval's body on its own, before any
// I/O: at most one of "service" and "grant", a service definition that
// is valid, a grant that is a service name.
func checkApproveBody(body apiwire.AccessRequestApprove) error {
	switch {
	case body.Service != nil && body.Grant != "":
		return fail(http.StatusBadRequest, `give at most one of "service" (a service to create) and "grant" (an existing service)`)
	case body.Service != nil:
		if err := body.Service.Validate(); err != nil {
			return fail(http.StatusBadRequest, "service: %v", err)
		}
	case body.Grant != "" && !services.IsValidName(body.Grant):
		return fail(http.StatusBadRequest, "grant: invalid service name %q", body.Grant)
	}
	return nil
}

// grantFor decides what approving req grants: the service name, and
// the service to create first, if any (def, checked already by
// checkApproveBody), or the existing service named grant. It does no
// I/O, so nothing is written for a request it refuses.
func (a *API) grantFor(req state.AccessRequestRow, def *services.Service, grant string) (string, *services.Service, error) {
	table := a.deps.catalog.Services()
	if req.Service != "" {
		switch {
		case def != nil:
			return "", nil, fail(http.StatusBadRequest, "access request %s asks for the existing service %s: approve it without a service definition", req.ID, req.Service)
		case grant != "" && grant != req.Service:
			return "", nil, fail(http.StatusBadRequest, "access request %s asks for service %s, not %s", req.ID, req.Service, grant)
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
	covering := coveringServices(table, host, port)
	switch {
	case grant != "":
		if _, ok := serviceNamed(table, grant); !ok {
			return "", nil, fail(http.StatusBadRequest, "grant: unknown service %q", grant)
		}
		if !slices.Contains(covering, grant) {
			return "", nil, fail(http.StatusBadRequest, "grant: service %s does not cover the requested host %s", grant, req.Host)
		}
		return grant, nil, nil
	case def == nil && len(covering) == 0:
		return "", nil, fail(http.StatusBadRequest, `no service covers %s yet: approve with {"service": {...}}, the full definition of a service to create for it`, req.Host)
	case def == nil && len(covering) > 1:
		return "", nil, fail(http.StatusBadRequest, `services %s cover %s (on different paths): approve with {"grant": "<name>"} naming the one to grant, or {"service": {...}} to create another`,
			strings.Join(covering, ", "), req.Host)
	case def == nil:
		return covering[0], nil, nil
	}
	svc := *def
	if _, exists := serviceNamed(table, svc.Name); exists {
		return "", nil, fail(http.StatusConflict, `service %s exists already: approve with {"grant": %q} to grant it, or choose another name`, svc.Name, svc.Name)
	}
	one, err := services.NewTable([]services.Service{svc})
	if err != nil {
		return "", nil, fail(http.StatusBadRequest, "service: %v", err)
	}
	if len(coveringServices(one, host, port)) == 0 {
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
		a.answerError(w, r, err)
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	if _, err := a.pendingRequest(ctx, id); err != nil {
		a.answerError(w, r, err)
		return
	}
	decided, err := a.decide(ctx, c, id, apiwire.RequestDenied, body.Reason)
	if err != nil {
		a.answerError(w, r, err)
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
