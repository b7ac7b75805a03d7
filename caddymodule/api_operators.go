package caddymodule

// Operators (people, with a role and a password) and their logins.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
)

// operatorStore is what the operator and login routes read and write.
type operatorStore interface {
	InsertOperator(ctx context.Context, o state.OperatorRow) error
	Operator(ctx context.Context, name string) (state.OperatorRow, bool, error)
	ListOperators(ctx context.Context) ([]state.OperatorRow, error)
	UpdateOperator(ctx context.Context, name string, role, passwordHash *string, at time.Time) (bool, error)
	DeleteOperator(ctx context.Context, name string) (bool, error)
	InsertLogin(ctx context.Context, l state.LoginRow, checkedPasswordHash string) error
	DeleteLogin(ctx context.Context, hash [32]byte) error
}

func viewOperator(o state.OperatorRow) apiwire.Operator {
	return apiwire.Operator{Name: o.Name, Role: o.Role, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func (a *API) listOperators(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := writeContext(r)
	defer cancel()
	rows, err := a.deps.ids.ListOperators(ctx)
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	out := make([]apiwire.Operator, 0, len(rows))
	for _, o := range rows {
		out = append(out, viewOperator(o))
	}
	writeJSON(w, http.StatusOK, apiwire.OperatorList{Operators: out})
}

func (a *API) getOperator(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := writeContext(r)
	defer cancel()
	row, ok, err := a.deps.ids.Operator(ctx, name)
	if err == nil && !ok {
		err = fail(http.StatusNotFound, "no operator named %s", name)
	}
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, viewOperator(row))
}

func (a *API) createOperator(w http.ResponseWriter, r *http.Request) {
	var body apiwire.OperatorCreateRequest
	if !readJSON(w, r, &body) {
		return
	}
	if err := identity.ValidName(identity.OperatorName, body.Name); err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	role, err := identity.ParseRole(body.Role)
	if err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	phc, err := identity.HashPassword(body.Password)
	if err != nil {
		writeFailure(w, err, http.StatusBadRequest)
		return
	}
	now := a.now().UTC()
	row := state.OperatorRow{Name: body.Name, PasswordHash: phc, Role: role.String(), CreatedAt: now, UpdatedAt: now}
	ctx, cancel := writeContext(r)
	defer cancel()
	if err := a.deps.ids.InsertOperator(ctx, row); err != nil {
		if errors.Is(err, state.ErrConflict) {
			err = fail(http.StatusConflict, "operator %s exists already", body.Name)
		}
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	a.logger.Info("operator created", zap.String("operator", row.Name), zap.String("role", row.Role))
	a.record(r, audit.OperatorCreate, row.Name, "role "+row.Role)
	writeJSON(w, http.StatusCreated, viewOperator(row))
}

// patchOperator changes an operator's role or password; a new password
// ends the operator's logins.
func (a *API) patchOperator(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body apiwire.OperatorPatchRequest
	if !readJSON(w, r, &body) {
		return
	}
	if body.Role == nil && body.Password == nil {
		writeError(w, http.StatusBadRequest, `nothing to change: give "role", "password" or both`)
		return
	}
	var details []string
	var role, phc *string
	if body.Role != nil {
		parsed, err := identity.ParseRole(*body.Role)
		if err != nil {
			writeFailure(w, err, http.StatusBadRequest)
			return
		}
		text := parsed.String()
		role = &text
		details = append(details, "role "+text)
	}
	if body.Password != nil {
		hashed, err := identity.HashPassword(*body.Password)
		if err != nil {
			writeFailure(w, err, http.StatusBadRequest)
			return
		}
		phc = &hashed
		details = append(details, "password changed, logins ended")
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	found, err := a.deps.ids.UpdateOperator(ctx, name, role, phc, a.now().UTC())
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no operator named %s", name)
	}
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	a.record(r, audit.OperatorUpdate, name, strings.Join(details, "; "))
	row, ok, err := a.deps.ids.Operator(ctx, name)
	if err != nil || !ok {
		// Updated, then gone or unreadable: the change stands.
		writeJSON(w, http.StatusOK, apiwire.Operator{Name: name, Role: deref(role)})
		return
	}
	writeJSON(w, http.StatusOK, viewOperator(row))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (a *API) deleteOperator(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := writeContext(r)
	defer cancel()
	found, err := a.deps.ids.DeleteOperator(ctx, name)
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no operator named %s", name)
	}
	if err != nil {
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	a.logger.Info("operator deleted", zap.String("operator", name))
	a.record(r, audit.OperatorDelete, name, "")
	w.WriteHeader(http.StatusNoContent)
}

// errBadLogin is every failed login's answer: it does not say whether
// the name exists.
var errBadLogin = &identity.UnauthenticatedError{Reason: "wrong operator name or password"}

// login checks an operator's password and opens a login: a token for
// API clients and the same token as an HttpOnly, SameSite=Strict
// cookie for browsers. Failures are rate limited per client address
// and per name; over the limit the password is not even checked (429).
// An unknown name costs one argon2id all the same, so timing does not
// tell names apart.
func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var body apiwire.LoginRequest
	if !readJSON(w, r, &body) {
		return
	}
	client := clientAddr(r)
	attempt, err := a.deps.logins.Begin(client, body.Name)
	if err != nil {
		var limited *identity.RateLimitError
		switch {
		case errors.Is(err, identity.ErrWrongLogin):
			// Not a name any operator could have: refused before any
			// lookup, answered like every other failed login.
			a.loginFailed(r, body.Name, false, client)
			writeFailure(w, errBadLogin, http.StatusUnauthorized)
		case errors.As(err, &limited):
			w.Header().Set("Retry-After", limited.RetryAfterSeconds())
			a.logger.Info("login refused: rate limited", zap.String("remote", r.RemoteAddr), zap.Error(err))
			writeFailure(w, err, http.StatusTooManyRequests)
		default:
			a.logger.Error("login refused: no client address to rate limit by", zap.String("remote", r.RemoteAddr), zap.Error(err))
			writeFailure(w, err, http.StatusInternalServerError)
		}
		return
	}
	// An attempt never ended counts as failed; Abort below is for the
	// server's own failures, which the client did not cause.
	defer attempt.Fail()
	ctx, cancel := writeContext(r)
	defer cancel()
	var op state.OperatorRow
	var found bool
	if identity.ValidName(identity.OperatorName, body.Name) == nil {
		if op, found, err = a.deps.ids.Operator(ctx, body.Name); err != nil {
			attempt.Abort()
			writeFailure(w, err, http.StatusInternalServerError)
			return
		}
	}
	ok := false
	if found {
		// A hash this server cannot read is a failed login, never a
		// way in (CheckPassword does the dummy work for it).
		var cerr error
		ok, cerr = identity.CheckPasswordContext(ctx, op.PasswordHash, body.Password)
		switch {
		case errors.Is(cerr, identity.ErrBadHash):
			a.logger.Error("login failed: the operator's stored password hash is unreadable; set a new password", zap.String("operator", op.Name))
		case cerr != nil:
			// The wait for a hashing slot ended (the client left, or
			// the deadline): not the client's failed guess.
			attempt.Abort()
			writeFailure(w, cerr, http.StatusServiceUnavailable)
			return
		}
	} else if err := identity.DummyCheckPasswordContext(ctx, body.Password); err != nil {
		attempt.Abort()
		writeFailure(w, err, http.StatusServiceUnavailable)
		return
	}
	role, rerr := identity.ParseRole(op.Role)
	if !ok || rerr != nil {
		a.loginFailed(r, body.Name, found, client)
		writeFailure(w, errBadLogin, http.StatusUnauthorized)
		return
	}
	token, hash, err := identity.NewToken(identity.KindOperator)
	if err != nil {
		attempt.Abort()
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	now := a.now().UTC()
	expires := now.Add(a.deps.loginTTL)
	err = a.deps.ids.InsertLogin(ctx, state.LoginRow{TokenHash: hash, Operator: op.Name, CreatedAt: now, ExpiresAt: expires}, op.PasswordHash)
	if errors.Is(err, state.ErrConflict) {
		// The password changed or the operator went away since the
		// check: this login was made with what no longer holds.
		a.loginFailed(r, body.Name, true, client)
		writeFailure(w, errBadLogin, http.StatusUnauthorized)
		return
	}
	if err != nil {
		attempt.Abort()
		writeFailure(w, err, http.StatusInternalServerError)
		return
	}
	attempt.Succeed()
	a.logger.Info("operator logged in", zap.String("operator", op.Name), zap.String("remote", r.RemoteAddr))
	a.recordAs(ctx, audit.Entry{Actor: op.Name, ActorKind: apiwire.ActorOperator, Action: audit.Login, Target: op.Name, Client: client,
		Detail: "role " + role.String()})
	http.SetCookie(w, identity.LoginCookie(token, a.deps.loginTTL, r.TLS != nil))
	writeJSON(w, http.StatusOK, apiwire.Login{Token: token, ExpiresAt: expires, Role: role.String()})
}

// loginFailed audits a failed login (the limiter counted it when the
// attempt began). The name given is the audit's actor and target only
// when an operator of that name exists (anything else could be a
// password typed into the wrong field): see audit.FailedLogin.
func (a *API) loginFailed(r *http.Request, name string, known bool, client string) {
	e := audit.FailedLogin(name, known, client)
	a.logger.Info("login failed", zap.String("operator", e.Target), zap.String("remote", r.RemoteAddr))
	ctx, cancel := writeContext(r)
	defer cancel()
	a.recordAs(ctx, e)
}

// logout ends the login used to call it and clears the cookie. For the
// admin token it does nothing (there is no login to end).
func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if c.Kind == identity.PrincipalOperator {
		ctx, cancel := writeContext(r)
		defer cancel()
		if err := a.deps.ids.DeleteLogin(ctx, c.loginHash); err != nil {
			writeFailure(w, err, http.StatusInternalServerError)
			return
		}
		a.record(r, audit.Logout, c.Name, "")
	}
	http.SetCookie(w, identity.ClearLoginCookie(r.TLS != nil))
	w.WriteHeader(http.StatusNoContent)
}
