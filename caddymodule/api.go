package caddymodule

// The management API: its routes, each behind exactly one permission,
// the JSON helpers and the one mapping of errors to statuses. The
// handlers live with their concept: hostcheck.go (the Host check every
// request passes first), api_auth.go (who is calling), api_whoami.go,
// api_credentials.go (credentials, stores, services), api_match.go
// (which service a URL reaches), api_sessions.go, api_agents.go,
// api_operators.go (and logins), api_requests.go, api_audit.go,
// api_activity.go (the activity log and its stream), api_paging.go
// (limit and cursors), api_metrics.go (GET /metrics); every other path
// is the web UI's (package webui).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/activity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/metrics"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/caddymodule/tokensource"
	"github.com/agentvault/caddy-agent-vault/caddymodule/webui"
	"github.com/agentvault/caddy-agent-vault/storebackends"
)

func init() {
	caddy.RegisterModule(API{})
}

// maxBody bounds management API request bodies.
const maxBody = 1 << 20

// apiWriteTimeout bounds a write of the API to the state database: a
// database that hangs (a row lock another broker holds, a partitioned
// connection) fails the request with 503 instead of holding it, and
// its connection, for as long as TCP takes to notice.
const apiWriteTimeout = 10 * time.Second

// writeContext is the context of one API request's database work.
func writeContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), apiWriteTimeout)
}

// API is the management API: credentials, services, sessions, agents,
// operators, access requests, the audit trail and the activity log, as
// JSON under /api/v1/, the Prometheus metrics at /metrics and the web
// UI on every other path (a client of the same API). Only Host names
// it answers to reach it (hostcheck.go). Callers authenticate with the admin token, an agent token,
// an operator's login (Bearer or cookie) or a session token, and each
// route allows what identity.Allowed says for its one permission. It
// is an ordinary Caddy handler, served on its own site (by default
// 127.0.0.1:14321), not on Caddy's admin endpoint.
type API struct {
	// AllowedHosts are the host names (no port) the management
	// listener answers to besides IP literals, localhost and names
	// under .localhost: a request with another Host is 421 (DNS
	// rebinding protection, hostcheck.go). Default: none.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`

	// allowedHosts is AllowedHosts validated and canonical.
	allowedHosts []string
	deps         apiDeps
	logger       *zap.Logger
	mux          *http.ServeMux
	// ui serves the web UI's pages and assets (package webui); nil:
	// every path outside the API is 404.
	ui http.Handler
	// invalidNames counts logins with names no operator can have
	// (api_operators.go).
	invalidNames *invalidNames
	// life ends when this config is unloaded (Cleanup, after Caddy
	// cancels the Provision context): long requests (activity streams)
	// end with it, since the old server waits for them and they would
	// check callers against the old config.
	life    context.Context
	endLife context.CancelFunc
}

// apiDeps is everything the API reads from the rest of the app.
type apiDeps struct {
	adminToken string
	creds      *credentials.Set
	tokens     *tokenSources // nil: token sources cannot be defined (tests)
	catalog    *catalog.Catalog
	sessions   *sessions.Registry
	rootPEM    func() []byte
	proxyURL   string
	defaultTTL time.Duration
	maxTTL     time.Duration
	// leaseTimeout is how long a leased session lives without a renewal.
	leaseTimeout time.Duration
	// loginTTL is how long an operator's login lasts.
	loginTTL time.Duration
	// ids holds agents, operators, logins, access requests and the
	// audit trail (the state database, through identityadapters.go).
	ids identityStore
	// audit records every management change.
	audit *audit.Recorder
	// logins limits failed logins (shared across config reloads).
	logins *identity.LoginLimiter
	// state reports the state database's health (nil: always healthy).
	state stateHealth
	// now is the API's clock; nil is time.Now.
	now func() time.Time
	// metrics is what GET /metrics serves (nil: 503), also to the
	// holder of metricsToken (empty: none), who may read nothing else.
	metrics      *metrics.Metrics
	metricsToken string
	// activity reads the activity log (api_activity.go).
	activity activity.Lister
	// discovered reads the discovered hosts (discoveredwiring.go).
	discovered discoveredLister
	// activityStats reads this broker's activity Recorder's counts
	// (nil: all zero).
	activityStats func() activity.Stats
	// streamPoll is how often an activity stream reads the log; 0 is
	// every second (tests make it shorter).
	streamPoll time.Duration
	// streamTicks is the stream's poll ticker: a channel of ticks and
	// its stop (nil: a time.Ticker); tests tick it by hand.
	streamTicks func(every time.Duration) (<-chan time.Time, func())
}

// CaddyModule returns the Caddy module information.
func (API) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.agent_vault_api",
		New: func() caddy.Module { return new(API) },
	}
}

// Validate checks the configuration alone (no I/O): allowed_hosts.
// Provision checks it too, first, so that a bad name fails before any
// listener or app is looked at.
func (a *API) Validate() error {
	_, err := canonicalAllowedHosts(a.AllowedHosts)
	return err
}

// Provision validates allowed_hosts, refuses a listen address another
// process holds, finds the app and sets up the routes.
func (a *API) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.life, a.endLife = context.WithCancel(ctx)
	if err := a.compileAllowedHosts(); err != nil { // hostcheck.go
		return err
	}
	if err := checkServerAddrs(ctx); err != nil { // bindcheck.go
		return err
	}
	appIface, err := ctx.App("agent_vault")
	if err != nil {
		return fmt.Errorf("agent_vault_api needs the agent_vault app: %v", err)
	}
	a.deps = appIface.(*App).apiDeps()
	a.routes()
	return nil
}

// routes builds the mux. Every route but the public three is wrapped
// in exactly one permission (allow); the handler then narrows to the
// caller's own items where the permission says "own".
func (a *API) routes() {
	if a.life == nil { // not provisioned: in-process tests
		a.life, a.endLife = context.WithCancel(context.Background())
	}
	a.invalidNames = new(invalidNames)
	a.invalidNames.gate.Every, a.invalidNames.gate.Now = invalidNameEvery, a.now
	m := http.NewServeMux()
	// Public: health, the CA agents must trust, and logging in.
	m.HandleFunc("GET /healthz", a.health)
	m.HandleFunc("GET /api/v1/ca.pem", a.caPEM)
	m.HandleFunc("POST /api/v1/login", a.login)

	route := func(pattern string, perm identity.Permission, h http.HandlerFunc) {
		m.HandleFunc(pattern, a.allow(perm, h))
	}
	route("POST /api/v1/logout", identity.Logout, a.logout)

	route("GET /api/v1/whoami", identity.ReadAll, a.whoami) // api_whoami.go
	route("GET /api/v1/credentials", identity.ReadAll, a.listCredentials)
	route("GET /api/v1/stores", identity.ReadAll, a.listStores)
	route("PUT /api/v1/credentials/{name}", identity.ManageSecrets, a.putCredential)
	route("DELETE /api/v1/credentials/{name}", identity.ManageSecrets, a.deleteCredential)
	route("GET /api/v1/services", identity.ReadAll, a.listServices)
	route("PUT /api/v1/services/{name}", identity.ManageSecrets, a.putService)
	route("DELETE /api/v1/services/{name}", identity.ManageSecrets, a.deleteService)

	route("GET /api/v1/session", identity.ReadOwnSession, a.ownSession)
	route("GET /api/v1/sessions", identity.ListSessions, a.listSessions)
	route("POST /api/v1/sessions", identity.MintSession, a.postSession)
	route("DELETE /api/v1/sessions/{id}", identity.ManageSessions, a.revokeSession)
	route("POST /api/v1/sessions/{id}/renew", identity.ManageSessions, a.renewSession)

	route("GET /api/v1/agents", identity.ReadAll, a.listAgents)
	route("POST /api/v1/agents", identity.ManageAgents, a.createAgent)
	route("GET /api/v1/agents/{name}", identity.ReadAll, a.getAgent)
	route("PATCH /api/v1/agents/{name}", identity.ManageAgents, a.patchAgent)
	route("DELETE /api/v1/agents/{name}", identity.ManageAgents, a.deleteAgent)
	route("POST /api/v1/agents/{name}/rotate", identity.ManageAgents, a.rotateAgent)

	route("GET /api/v1/operators", identity.ReadAll, a.listOperators)
	route("POST /api/v1/operators", identity.ManageOperators, a.createOperator)
	route("GET /api/v1/operators/{name}", identity.ReadAll, a.getOperator)
	route("PATCH /api/v1/operators/{name}", identity.ManageOperators, a.patchOperator)
	route("DELETE /api/v1/operators/{name}", identity.ManageOperators, a.deleteOperator)

	route("POST /api/v1/requests", identity.AskAccess, a.createRequest)
	route("GET /api/v1/requests", identity.ListRequests, a.listRequests)
	route("POST /api/v1/requests/{id}/approve", identity.DecideRequests, a.approveRequest)
	route("POST /api/v1/requests/{id}/deny", identity.DecideRequests, a.denyRequest)

	route("GET /api/v1/audit", identity.ReadAll, a.listAudit)

	route("GET /api/v1/activity", identity.ReadAll, a.listActivity)          // api_activity.go
	route("GET /api/v1/activity/stream", identity.ReadAll, a.streamActivity) // api_activity.go
	route("GET /api/v1/activity/stats", identity.ReadAll, a.activityStats)   // api_activity.go
	route("GET /api/v1/services/match", identity.ReadAll, a.matchService)    // api_match.go
	route("GET /api/v1/discovered", identity.ReadAll, a.listDiscovered)      // discoveredwiring.go
	// Metrics: a viewer's credentials, or the metrics token (api_metrics.go).
	m.HandleFunc("GET /metrics", a.metrics)

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	a.mux = m
	a.ui = webui.New(m, webui.Options{ProxyURL: a.deps.proxyURL})
}

// Cleanup ends the requests that would outlive this config (activity
// streams).
func (a *API) Cleanup() error {
	if a.endLife != nil {
		a.endLife()
	}
	return nil
}

// ServeHTTP serves the management API under /api/, /healthz and
// /metrics, and the web UI (package webui) everywhere else. A request
// whose Host this server does not answer to is refused first
// (hostcheck.go: DNS rebinding).
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if err := a.checkHost(r); err != nil {
		a.answerError(w, r, err)
		return nil
	}
	if a.ui != nil && !apiPath(r.URL.Path) {
		a.ui.ServeHTTP(w, r)
		return nil
	}
	a.mux.ServeHTTP(w, r)
	return nil
}

// apiPath reports whether path belongs to the JSON API (and the
// health and metrics endpoints) rather than to the web UI.
func apiPath(path string) bool {
	return path == "/api" || strings.HasPrefix(path, "/api/") || path == "/healthz" || path == "/metrics"
}

func (a *API) now() time.Time {
	if a.deps.now != nil {
		return a.deps.now()
	}
	return time.Now()
}

// health answers 200 "ok", or 503 "degraded" while the state database
// is unreachable past max_stale (the proxy refuses every request) or a
// store is past its staleness bound (requests needing its credentials
// are refused).
func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	if err := stateHealthy(a.deps.state); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiwire.Health{Status: apiwire.HealthDegraded, Reason: err.Error()})
		return
	}
	if _, stale := a.deps.creds.Status(a.now()); stale {
		writeJSON(w, http.StatusServiceUnavailable, apiwire.Health{Status: apiwire.HealthDegraded, Reason: "a credential store is past its max_staleness; see GET /api/v1/stores"})
		return
	}
	writeJSON(w, http.StatusOK, apiwire.Health{Status: apiwire.HealthOK})
}

func (a *API) caPEM(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(a.deps.rootPEM())
}

// statusCoder is an error that knows its HTTP status: identity's
// errors (400, 401, 403, 429) and the API's own apiFailure.
type statusCoder interface {
	error
	HTTPStatus() int
}

// apiFailure is an error a handler decided the status and text of.
type apiFailure struct {
	status int
	msg    string
}

func (e *apiFailure) Error() string   { return e.msg }
func (e *apiFailure) HTTPStatus() int { return e.status }

// fail is an apiFailure with a formatted message.
func fail(status int, format string, args ...any) error {
	return &apiFailure{status: status, msg: fmt.Sprintf(format, args...)}
}

// Fixed texts of apiError for errors whose own text is not for the
// caller.
const (
	// stateUnavailableText answers any failure of the state database:
	// its own error names the database's host, user and name, and the
	// caller may not even be authenticated.
	stateUnavailableText = "the state database is unavailable; the broker's log has the details, retry later"
	// internalErrorText answers an error nobody decided the status of.
	internalErrorText = "internal error; the broker's log has the details"
)

// apiError is the API's one mapping of an error to what its caller is
// told: the status, and a text that is the error's own or, when that
// text is for the log only (logged), a fixed one. In order:
//   - a failure of the state database (stateError, as the adapters
//     mark every one) is 503 with stateUnavailableText;
//   - an error that carries its status (identity's, the handlers'
//     apiFailure) answers with it and its text;
//   - the sentinels of the state, sessions, credentials and store
//     packages are answered with fixed texts (a handler that knows
//     more, such as which agent exists already, says so with an
//     apiFailure instead);
//   - a context that ended (the request's deadline) is 503;
//   - anything else is 500 with internalErrorText.
func apiError(err error) (status int, text string, logged bool) {
	var se *stateError
	var coded statusCoder
	switch {
	case err == nil:
		return http.StatusInternalServerError, internalErrorText, true
	case errors.As(err, &se):
		return http.StatusServiceUnavailable, stateUnavailableText, true
	case errors.As(err, &coded):
		return coded.HTTPStatus(), coded.Error(), coded.HTTPStatus() >= http.StatusInternalServerError
	case errors.Is(err, state.ErrConflict), errors.Is(err, storebackends.ErrConflict):
		// Another write came first: a duplicate, a decided request, a
		// credential changed on another broker.
		return http.StatusConflict, "another change to it came first; read it again and retry", false
	case errors.Is(err, state.ErrAgentGone):
		return http.StatusForbidden, "the agent was deleted", false
	case errors.Is(err, sessions.ErrUnknown):
		return http.StatusNotFound, "no such session", false
	case errors.Is(err, sessions.ErrNotLeased):
		return http.StatusConflict, `the session has no lease: only sessions created with "lease": true are renewed`, false
	case errors.Is(err, sessions.ErrEnded):
		return http.StatusGone, "the session has ended (revoked, expired or its lease lapsed); mint a new one", false
	case errors.Is(err, storebackends.ErrInvalidInput):
		return http.StatusBadRequest, err.Error(), false
	case errors.Is(err, storebackends.ErrNotFound):
		return http.StatusNotFound, err.Error(), false
	case errors.Is(err, tokensource.ErrInvalidSpec):
		return http.StatusBadRequest, err.Error(), false
	case errors.Is(err, credentials.ErrShadowed), errors.Is(err, credentials.ErrNoWritableStore), errors.Is(err, credentials.ErrIsTokenSource):
		// The configuration, not the request, stands in the way; the
		// text says which store.
		return http.StatusConflict, err.Error(), false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "the request took too long; retry later", true
	}
	return http.StatusInternalServerError, internalErrorText, true
}

// answerError answers r with err as apiError maps it. An error whose
// text the caller does not get is logged with it, so that "the log has
// the details" holds.
func (a *API) answerError(w http.ResponseWriter, r *http.Request, err error) {
	status, text, logged := apiError(err)
	if logged && a.logger != nil {
		a.logger.Error("management API: request failed", zap.Int("status", status), zap.String("method", r.Method),
			zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr), zap.Error(err))
	}
	var limited *identity.RateLimitError
	switch {
	case status == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="agent-vault"`)
	case errors.As(err, &limited):
		w.Header().Set("Retry-After", limited.RetryAfterSeconds())
	}
	writeError(w, status, text)
}

// readJSON decodes a bounded, strict JSON body, answering 400 itself.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+jsonErrorText(err))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "invalid JSON body: trailing data")
		return false
	}
	return true
}

// readOptionalJSON is readJSON for a body that may be absent (empty):
// v is left as it is then.
func readOptionalJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+jsonErrorText(err))
		return false
	}
	if strings.TrimSpace(string(body)) == "" {
		return true
	}
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	return readJSON(w, r, v)
}

// jsonErrorText describes a decoding error without echoing the input
// (a malformed credential body may hold the secret).
func jsonErrorText(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.As(err, &tooBig):
		return "body too large"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "body is empty or truncated"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return err.Error()
	}
	return "cannot decode"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiwire.Error{Error: msg})
}

// Interface guards
var (
	_ caddy.Provisioner           = (*API)(nil)
	_ caddy.CleanerUpper          = (*API)(nil)
	_ caddy.Validator             = (*API)(nil)
	_ caddyhttp.MiddlewareHandler = (*API)(nil)
)
