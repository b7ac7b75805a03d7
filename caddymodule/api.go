package caddymodule

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
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

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/catalog"
	"github.com/agentvault/caddy-agent-vault/caddymodule/credentials"
	"github.com/agentvault/caddy-agent-vault/caddymodule/services"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
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

// writeContext is the context of one API request's database write.
func writeContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), apiWriteTimeout)
}

// API is the management API: credentials, services and sessions, as
// JSON under /api/v1/, authenticated with the app's admin token. It is
// an ordinary Caddy handler, served on its own site (by default
// 127.0.0.1:14321), not on Caddy's admin endpoint.
type API struct {
	deps   apiDeps
	logger *zap.Logger
	mux    *http.ServeMux
}

// apiDeps is everything the API reads from the rest of the app.
type apiDeps struct {
	adminToken string
	creds      *credentials.Set
	catalog    *catalog.Catalog
	sessions   *sessions.Registry
	rootPEM    func() []byte
	proxyURL   string
	defaultTTL time.Duration
	maxTTL     time.Duration
	// state reports the state database's health (nil: always healthy).
	state stateHealth
}

// CaddyModule returns the Caddy module information.
func (API) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.agent_vault_api",
		New: func() caddy.Module { return new(API) },
	}
}

// Provision refuses a listen address another process holds, finds the
// app and sets up the routes.
func (a *API) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if err := checkServerAddrs(ctx); err != nil { // bindcheck.go
		return err
	}
	appIface, err := ctx.App("agent_vault")
	if err != nil {
		return fmt.Errorf("agent_vault_api needs the agent_vault app: %v", err)
	}
	a.deps = appIface.(*App).apiDeps()
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", a.health)
	m.HandleFunc("GET /api/v1/ca.pem", a.caPEM)
	m.HandleFunc("GET /api/v1/credentials", a.auth(a.listCredentials))
	m.HandleFunc("GET /api/v1/stores", a.auth(a.listStores))
	m.HandleFunc("PUT /api/v1/credentials/{name}", a.auth(a.putCredential))
	m.HandleFunc("DELETE /api/v1/credentials/{name}", a.auth(a.deleteCredential))
	m.HandleFunc("GET /api/v1/services", a.auth(a.listServices))
	m.HandleFunc("PUT /api/v1/services/{name}", a.auth(a.putService))
	m.HandleFunc("DELETE /api/v1/services/{name}", a.auth(a.deleteService))
	m.HandleFunc("GET /api/v1/sessions", a.auth(a.listSessions))
	m.HandleFunc("POST /api/v1/sessions", a.auth(a.postSession))
	m.HandleFunc("DELETE /api/v1/sessions/{id}", a.auth(a.revokeSession))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	a.mux = m
	return nil
}

// ServeHTTP serves the management API.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	a.mux.ServeHTTP(w, r)
	return nil
}

// auth wraps a handler with the admin-token check.
func (a *API) auth(h http.HandlerFunc) http.HandlerFunc {
	want := sha256.Sum256([]byte(a.deps.adminToken))
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			a.logger.Info("management API: bad admin token", zap.String("remote", r.RemoteAddr), zap.String("path", r.URL.Path))
			w.Header().Set("WWW-Authenticate", `Bearer realm="agent-vault"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		h(w, r)
	}
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
	if _, stale := a.deps.creds.Status(time.Now()); stale {
		writeJSON(w, http.StatusServiceUnavailable, apiwire.Health{Status: apiwire.HealthDegraded, Reason: "a credential store is past its max_staleness; see GET /api/v1/stores"})
		return
	}
	writeJSON(w, http.StatusOK, apiwire.Health{Status: apiwire.HealthOK})
}

func (a *API) listStores(w http.ResponseWriter, _ *http.Request) {
	list, _ := a.deps.creds.Status(time.Now())
	writeJSON(w, http.StatusOK, apiwire.StoreList{Stores: list})
}

func (a *API) caPEM(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(a.deps.rootPEM())
}

func (a *API) listCredentials(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, apiwire.CredentialList{Credentials: a.deps.creds.List()})
}

func (a *API) putCredential(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body apiwire.CredentialPutRequest
	if !readJSON(w, r, &body) {
		return
	}
	if body.Value == nil {
		writeError(w, http.StatusBadRequest, `body must be {"value":"..."}`)
		return
	}
	m, created, err := a.deps.creds.Put(name, *body.Value)
	if err != nil {
		writeError(w, storeErrorStatus(err), err.Error())
		return
	}
	a.logger.Info("credential stored", zap.String("name", name), zap.String("store", m.Store), zap.String("version", m.Version))
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, m)
}

func (a *API) deleteCredential(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := a.deps.creds.Delete(name)
	switch {
	case errors.Is(err, storebackends.ErrNotFound):
		writeError(w, http.StatusNotFound, "no credential named "+name)
	case err != nil:
		writeError(w, storeErrorStatus(err), err.Error())
	default:
		a.logger.Info("credential deleted", zap.String("name", name))
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *API) listServices(w http.ResponseWriter, _ *http.Request) {
	svcs := a.deps.catalog.Services().Services()
	if svcs == nil {
		svcs = []services.Service{}
	}
	writeJSON(w, http.StatusOK, apiwire.ServiceList{Services: svcs})
}

func (a *API) putService(w http.ResponseWriter, r *http.Request) {
	var svc services.Service
	if !readJSON(w, r, &svc) {
		return
	}
	name := r.PathValue("name")
	if svc.Name != "" && svc.Name != name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body names service %q but the URL names %q", svc.Name, name))
		return
	}
	svc.Name = name
	if err := svc.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var warnings []string
	ctx, cancel := writeContext(r)
	defer cancel()
	if err := a.deps.catalog.Put(ctx, svc); err != nil {
		writeError(w, apiErrorStatus(err, http.StatusInternalServerError), err.Error())
		return
	}
	// A credential no store holds yet is not an error (it may be added
	// next), but requests that need it get 503 until then: say so.
	for _, name := range a.deps.creds.Missing(svc.Credentials()) {
		warnings = append(warnings, fmt.Sprintf("credential %s is not in any store yet; requests that need it are refused (503) until it is", name))
	}
	a.logger.Info("service stored", zap.String("name", svc.Name), zap.String("host", svc.Host), zap.String("auth", svc.Auth.Type),
		zap.Strings("warnings", warnings))
	writeJSON(w, http.StatusOK, apiwire.ServicePutResponse{Service: svc, Warnings: warnings})
}

func (a *API) deleteService(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := writeContext(r)
	defer cancel()
	found, err := a.deps.catalog.Delete(ctx, r.PathValue("name"))
	switch {
	case err != nil:
		writeError(w, apiErrorStatus(err, http.StatusInternalServerError), err.Error())
	case !found:
		writeError(w, http.StatusNotFound, "no service named "+r.PathValue("name"))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// viewSession is a session as the API shows it: never its token.
func viewSession(s *sessions.Session, now time.Time) apiwire.SessionInfo {
	v := apiwire.SessionInfo{ID: s.ID, Services: s.Services, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, Status: apiwire.SessionActive}
	switch {
	case !now.Before(s.ExpiresAt):
		v.Status = apiwire.SessionExpired
	case s.Revoked():
		v.Status = apiwire.SessionRevoked
	}
	n, last := s.Activity()
	v.Requests = n
	if !last.IsZero() {
		v.LastUsed = &last
	}
	return v
}

func (a *API) listSessions(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	list := a.deps.sessions.List()
	out := make([]apiwire.SessionInfo, 0, len(list))
	for _, s := range list {
		out = append(out, viewSession(s, now))
	}
	writeJSON(w, http.StatusOK, apiwire.SessionList{Sessions: out})
}

func (a *API) postSession(w http.ResponseWriter, r *http.Request) {
	var body apiwire.SessionRequest
	if !readJSON(w, r, &body) {
		return
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	sess, token, err := a.createSession(ctx, body.Services, body.TTL)
	if err != nil {
		writeError(w, apiErrorStatus(err, http.StatusBadRequest), err.Error())
		return
	}
	a.logger.Info("session created", zap.String("session", sess.ID), zap.Strings("services", sess.Services), zap.Time("expires_at", sess.ExpiresAt))
	writeJSON(w, http.StatusCreated, apiwire.Session{
		ID:           sess.ID,
		Token:        token,
		ProxyURL:     a.deps.proxyURL,
		CAPEM:        string(a.deps.rootPEM()),
		ExpiresAt:    sess.ExpiresAt,
		Services:     sess.Services,
		Placeholders: sess.Placeholders(),
	})
}

func (a *API) revokeSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := writeContext(r)
	defer cancel()
	found, err := a.deps.sessions.Revoke(ctx, id)
	switch {
	case err != nil && found:
		// Ended here (its tunnels are closed), but other brokers may
		// not know: say so, so the operator retries.
		a.logger.Warn("session revoked on this broker only; recording it is retried", zap.String("session", id), zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, "session "+id+" is revoked on this broker, but the revocation was not recorded cluster-wide yet ("+err.Error()+"); this broker retries until it is, and revoking again is safe")
		return
	case err != nil:
		writeError(w, apiErrorStatus(err, http.StatusInternalServerError), err.Error())
		return
	case !found:
		writeError(w, http.StatusNotFound, "no session "+id)
		return
	}
	a.logger.Info("session revoked", zap.String("session", id))
	w.WriteHeader(http.StatusNoContent)
}

// storeErrorStatus maps a store error to the API's status code: bad
// input is the caller's fault, a write the proxy would never use or a
// write another broker beat is a conflict, an unreachable state
// database is 503, anything else is the server's.
func storeErrorStatus(err error) int {
	if errors.Is(err, storebackends.ErrInvalidInput) {
		return http.StatusBadRequest
	}
	if errors.Is(err, credentials.ErrShadowed) || errors.Is(err, storebackends.ErrConflict) {
		return http.StatusConflict
	}
	return apiErrorStatus(err, http.StatusInternalServerError)
}

// apiErrorStatus is 503 for a failure of the state database (the
// request may succeed once it is back) and otherwise status.
func apiErrorStatus(err error, status int) int {
	var se *stateError
	if errors.As(err, &se) {
		return http.StatusServiceUnavailable
	}
	return status
}

// createSession opens a session for the named services (nil means
// every service defined now; the scope never grows afterwards; an empty
// list is an error) with one placeholder per credential they use.
func (a *API) createSession(ctx context.Context, names []string, ttlText string) (*sessions.Session, string, error) {
	ttl := a.deps.defaultTTL
	if ttlText != "" {
		d, err := caddy.ParseDuration(ttlText)
		if err != nil {
			return nil, "", fmt.Errorf("ttl: %v", err)
		}
		ttl = d
	}
	if ttl <= 0 || ttl > a.deps.maxTTL {
		return nil, "", fmt.Errorf("ttl must be between 1s and %s", a.deps.maxTTL)
	}
	all := a.deps.catalog.Services().Services()
	known := map[string]services.Service{}
	for _, s := range all {
		known[s.Name] = s
	}
	var scope []services.Service
	switch {
	case names == nil:
		scope = all
		names = []string{}
		for _, s := range all {
			names = append(names, s.Name)
		}
	case len(names) == 0:
		return nil, "", errors.New(`"services" is empty: name at least one service, or omit it for all services`)
	default:
		for _, n := range names {
			s, ok := known[n]
			if !ok {
				return nil, "", fmt.Errorf("unknown service %q", n)
			}
			scope = append(scope, s)
		}
	}
	var creds []string
	for _, s := range scope {
		creds = append(creds, s.Credentials()...)
	}
	return a.deps.sessions.Create(ctx, sessions.Spec{Services: names, TTL: ttl, Credentials: creds, NewPlaceholder: services.NewPlaceholder})
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
	_ caddyhttp.MiddlewareHandler = (*API)(nil)
)
