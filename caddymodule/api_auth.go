package caddymodule

// Who is calling the management API: the one middleware (allow) that
// resolves a request's token to a principal and checks the route's
// permission with identity.Allowed.

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// principalStore is what resolving a token reads. It is the state
// database, read on every request and never cached: a rotated or
// deleted agent token, an ended login or a changed role count at once,
// on every broker.
type principalStore interface {
	AgentByTokenHash(ctx context.Context, hash [32]byte) (state.AgentRow, bool, error)
	LoginByTokenHash(ctx context.Context, hash [32]byte) (state.LoginRow, state.OperatorRow, bool, error)
}

// caller is who made a request, as allow resolved it.
type caller struct {
	identity.Principal
	// agent is the calling agent as stored when the request came
	// (PrincipalAgent only).
	agent state.AgentRow
	// session is the calling session (PrincipalSession only).
	session *sessions.Session
	// loginID is the login used (PrincipalOperator only), so logout
	// ends that login (both its secrets) and no other.
	loginID string
	// client is the caller's address without its port, for the audit.
	client string
}

type callerKey struct{}

// callerOf returns the caller allow resolved for r. A handler behind
// allow always has one.
func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey{}).(*caller)
	if c == nil {
		// Unreachable behind allow; a handler reached otherwise is a
		// bug, and must not run as anyone.
		panic("caddymodule: API handler without a caller")
	}
	return c
}

// clientAddr is the request's remote address without its port.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// allow wraps h: the request's token is resolved to a principal, which
// must hold perm. A request without a usable token is 401, a refused
// one 403 (saying what was refused and why), and a state database that
// fails while the token is looked up 503: never 401, never allowed.
func (a *API) allow(perm identity.Permission, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := a.resolve(r, perm)
		if err == nil {
			if err = identity.Allowed(c.Principal, perm); err != nil {
				var fe *identity.ForbiddenError
				if errors.As(err, &fe) {
					err = fe.On(r.Method, r.URL.Path)
				}
			}
		}
		if err != nil {
			a.refuse(w, r, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	}
}

// refuse answers a request allow turned away (apiError), and logs why
// (never the token).
func (a *API) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if status, text, logged := apiError(err); !logged {
		a.logger.Info("management API: request refused", zap.Int("status", status), zap.String("reason", text),
			zap.String("remote", r.RemoteAddr), zap.String("method", r.Method), zap.String("path", r.URL.Path))
	}
	a.answerError(w, r, err)
}

// errUnknownToken is the answer for a token that matches nothing. It
// does not say which kind the token looked like: a guess learns
// nothing from it.
var errUnknownToken = &identity.UnauthenticatedError{Reason: "unknown or expired token"}

// errUnknownLogin is the answer for a login token or cookie that
// matches no login, or an expired one.
var errUnknownLogin = &identity.UnauthenticatedError{Reason: "unknown or expired login: log in again (POST /api/v1/login)"}

// resolve finds the principal of r's token (see identity.RequestToken:
// a Bearer header, else the login cookie): by its prefix an agent
// token, an operator login's token or cookie secret, or a session
// token, and anything else is compared with the admin token in
// constant time. A cookie must pass identity.CheckCookieRequest for
// perm first (before any lookup): it may only read, and log out.
func (a *API) resolve(r *http.Request, perm identity.Permission) (*caller, error) {
	token, fromCookie, err := identity.RequestToken(r)
	if err != nil {
		return nil, err
	}
	if fromCookie {
		if err := identity.CheckCookieRequest(r, perm); err != nil {
			return nil, err
		}
	}
	c := &caller{client: clientAddr(r)}
	ctx, cancel := writeContext(r)
	defer cancel()
	hash := identity.HashToken(token)
	switch kind := identity.KindOf(token); kind {
	case identity.KindAgent:
		row, ok, err := a.deps.ids.AgentByTokenHash(ctx, hash)
		if err != nil {
			return nil, asStateError(err)
		}
		if !ok {
			return nil, errUnknownToken
		}
		c.agent = row
		c.Principal = identity.AgentPrincipal(row.Name)
	case identity.KindOperator, identity.KindLoginCookie:
		login, op, ok, err := a.deps.ids.LoginByTokenHash(ctx, hash)
		if err != nil {
			return nil, asStateError(err)
		}
		// The secret must be the one its carrier may hold: RequestToken
		// and ParseBearer check the prefix, the stored row says it too.
		want := state.LoginViaBearer
		if fromCookie {
			want = state.LoginViaCookie
		}
		if !ok || login.Via != want || fromCookie != (kind == identity.KindLoginCookie) || !a.now().Before(login.ExpiresAt) {
			return nil, errUnknownLogin
		}
		if login.Operator == state.AdminTokenLogin {
			// The admin token's web sign-in: it lasts only while the
			// admin token that opened it is the configured one.
			if !validAdminLoginID(login.ID, a.deps.adminToken) {
				return nil, errUnknownLogin
			}
			c.loginID = login.ID
			c.Principal = identity.AdminTokenPrincipal()
			break
		}
		role, err := identity.ParseRole(op.Role)
		if err != nil {
			// A row this binary cannot read grants nothing.
			return nil, fail(http.StatusInternalServerError, "operator %s has a role this server does not know", op.Name)
		}
		c.loginID = login.ID
		c.Principal = identity.OperatorPrincipal(op.Name, role)
	case identity.KindSession:
		s, err := a.deps.sessions.Authenticate(token)
		if err != nil {
			return nil, errUnknownToken
		}
		c.session = s
		c.Principal = identity.SessionPrincipal(s.ID, s.Agent)
	default:
		want := identity.HashToken(a.deps.adminToken)
		if a.deps.adminToken == "" || subtle.ConstantTimeCompare(hash[:], want[:]) != 1 {
			return nil, errUnknownToken
		}
		c.Principal = identity.AdminTokenPrincipal()
	}
	return c, nil
}

// asStateError makes sure a failure of the state database maps to 503
// even if an adapter forgot to mark it.
func asStateError(err error) error {
	var se *stateError
	if errors.As(err, &se) {
		return err
	}
	return &stateError{err}
}
