package caddymodule

// Operators (people, with a role and a password) and their logins.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/audit"
	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
	"github.com/agentvault/caddy-agent-vault/caddymodule/state"
	"github.com/agentvault/caddy-agent-vault/internal/periodic"
)

// operatorStore is what the operator and login routes read and write.
type operatorStore interface {
	InsertOperator(ctx context.Context, o state.OperatorRow) error
	Operator(ctx context.Context, name string) (state.OperatorRow, bool, error)
	ListOperators(ctx context.Context) ([]state.OperatorRow, error)
	UpdateOperator(ctx context.Context, name string, role, passwordHash *string, at time.Time) (state.OperatorRow, bool, error)
	RehashOperatorPassword(ctx context.Context, name, oldHash, newHash string) (bool, error)
	DeleteOperator(ctx context.Context, name string) (bool, error)
	InsertLogin(ctx context.Context, secrets []state.LoginRow, checkedPasswordHash string) error
	DeleteLogin(ctx context.Context, id string) error
}

func viewOperator(o state.OperatorRow) apiwire.Operator {
	return apiwire.Operator{Name: o.Name, Role: o.Role, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt}
}

func (a *API) listOperators(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := writeContext(r)
	defer cancel()
	rows, err := a.deps.ids.ListOperators(ctx)
	if err != nil {
		a.answerError(w, r, err)
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
		a.answerError(w, r, err)
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
		a.answerError(w, r, err)
		return
	}
	role, err := identity.ParseRole(body.Role)
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	phc, err := identity.HashPassword(body.Password)
	if err != nil {
		a.answerError(w, r, err)
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
		a.answerError(w, r, err)
		return
	}
	a.logger.Info("operator created", zap.String("operator", row.Name), zap.String("role", row.Role))
	a.record(r, audit.OperatorCreate, row.Name, "role "+row.Role)
	writeJSON(w, http.StatusCreated, viewOperator(row))
}

// patchOperator changes an operator's role or password; a new password
// ends the operator's logins. The answer is the operator as the change
// committed it.
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
			a.answerError(w, r, err)
			return
		}
		text := parsed.String()
		role = &text
		details = append(details, "role "+text)
	}
	ctx, cancel := writeContext(r)
	defer cancel()
	if body.Password != nil {
		hashed, err := identity.HashPasswordContext(ctx, *body.Password)
		if err != nil {
			a.answerError(w, r, err)
			return
		}
		phc = &hashed
		details = append(details, "password changed, logins ended")
	}
	row, found, err := a.deps.ids.UpdateOperator(ctx, name, role, phc, a.now().UTC())
	if err == nil && !found {
		err = fail(http.StatusNotFound, "no operator named %s", name)
	}
	if err != nil {
		a.answerError(w, r, err)
		return
	}
	a.record(r, audit.OperatorUpdate, name, strings.Join(details, "; "))
	writeJSON(w, http.StatusOK, viewOperator(row))
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
		a.answerError(w, r, err)
		return
	}
	a.logger.Info("operator deleted", zap.String("operator", name))
	a.record(r, audit.OperatorDelete, name, "")
	w.WriteHeader(http.StatusNoContent)
}

// errBadLogin is every failed login's answer: it does not say whether
// the name exists.
var errBadLogin = &identity.UnauthenticatedError{Reason: "wrong operator name or password"}

// login checks an operator's password and opens a login, which has two
// secrets: its token, for API clients (the answer's "token", sent as a
// Bearer header), and a cookie secret of its own in an HttpOnly,
// SameSite=Strict cookie for browsers. The two differ because browsers
// send a host's cookies to every port of it (cookies ignore ports):
// any program listening on the host may receive the cookie, so the
// cookie can only read and log out (identity.CheckCookieRequest),
// never act as the token.
//
// A login another site may have made a browser send is refused first
// (identity.CheckLoginRequest: login CSRF). Failures are rate limited
// per client address and per name; over the limit the password is not
// even checked (429). A name no operator can have costs the address's
// budget too and is not audited one by one (it would be an
// unauthenticated write per request): its count is logged at most once
// a minute. An unknown name costs one argon2id all the same, so timing
// does not tell names apart.
func (a *API) login(w http.ResponseWriter, r *http.Request) {
	if err := identity.CheckLoginRequest(r); err != nil {
		a.refuse(w, r, err)
		return
	}
	var body apiwire.LoginRequest
	if !readJSON(w, r, &body) {
		return
	}
	if body.AdminToken != "" {
		if body.Name != "" || body.Password != "" {
			writeError(w, http.StatusBadRequest, `give "admin_token" alone, or "name" and "password"`)
			return
		}
		a.adminLogin(w, r, body.AdminToken)
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
			a.invalidNameLogin(r)
			err = errBadLogin
		case errors.As(err, &limited):
			a.logger.Info("login refused: rate limited", zap.String("remote", r.RemoteAddr), zap.Error(err))
		}
		a.answerError(w, r, err)
		return
	}
	// An attempt never ended counts as failed; Abort below is for the
	// server's own failures, which the client did not cause.
	defer attempt.Fail()
	ctx, cancel := writeContext(r)
	defer cancel()
	op, found, err := a.deps.ids.Operator(ctx, body.Name)
	if err != nil {
		attempt.Abort()
		a.answerError(w, r, err)
		return
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
			a.answerError(w, r, cerr)
			return
		}
	} else if err := identity.DummyCheckPasswordContext(ctx, body.Password); err != nil {
		attempt.Abort()
		a.answerError(w, r, err)
		return
	}
	role, rerr := identity.ParseRole(op.Role)
	if !ok || rerr != nil {
		a.loginFailed(r, body.Name, found, client)
		a.answerError(w, r, errBadLogin)
		return
	}
	now := a.now().UTC()
	secrets, token, cookie, err := newLogin(op.Name, now, now.Add(a.deps.loginTTL))
	if err != nil {
		attempt.Abort()
		a.answerError(w, r, err)
		return
	}
	err = a.deps.ids.InsertLogin(ctx, secrets, op.PasswordHash)
	if errors.Is(err, state.ErrConflict) {
		// The password changed or the operator went away since the
		// check: this login was made with what no longer holds.
		a.loginFailed(r, body.Name, true, client)
		a.answerError(w, r, errBadLogin)
		return
	}
	if err != nil {
		attempt.Abort()
		a.answerError(w, r, err)
		return
	}
	attempt.Succeed()
	a.logger.Info("operator logged in", zap.String("operator", op.Name), zap.String("remote", r.RemoteAddr))
	a.recordAs(ctx, audit.Entry{Actor: op.Name, ActorKind: apiwire.ActorOperator, Action: audit.Login, Target: op.Name, Client: client,
		Detail: "role " + role.String()})
	a.rehash(ctx, op, body.Password)
	http.SetCookie(w, identity.LoginCookie(cookie, a.deps.loginTTL, r.TLS != nil))
	writeJSON(w, http.StatusOK, apiwire.Login{Token: token, ExpiresAt: secrets[0].ExpiresAt, Role: role.String()})
}

// adminLogin opens a login with the admin token (the web UI's admin
// sign-in): a login of the reserved operator name state.AdminTokenLogin
// (no operator can have it) acting as owner, with the same two secrets
// as an operator's. The token is compared in constant time; failures
// are rate limited per address (and under the reserved name) like any
// failed login, and audited.
func (a *API) adminLogin(w http.ResponseWriter, r *http.Request, token string) {
	client := clientAddr(r)
	attempt, err := a.deps.logins.BeginReserved(client, state.AdminTokenLogin)
	if err != nil {
		var limited *identity.RateLimitError
		if errors.As(err, &limited) {
			a.logger.Info("admin token login refused: rate limited", zap.String("remote", r.RemoteAddr), zap.Error(err))
		}
		a.answerError(w, r, err)
		return
	}
	defer attempt.Fail()
	hash, want := identity.HashToken(token), identity.HashToken(a.deps.adminToken)
	ctx, cancel := writeContext(r)
	defer cancel()
	if a.deps.adminToken == "" || subtle.ConstantTimeCompare(hash[:], want[:]) != 1 {
		a.logger.Info("admin token login failed", zap.String("remote", r.RemoteAddr))
		a.recordAs(ctx, audit.Entry{Actor: identity.AdminTokenName, ActorKind: apiwire.ActorAdminToken, Action: audit.LoginFailed,
			Target: identity.AdminTokenName, Client: client, Detail: "wrong admin token"})
		a.answerError(w, r, errBadLogin)
		return
	}
	now := a.now().UTC()
	secrets, bearer, cookie, err := newLogin(state.AdminTokenLogin, now, now.Add(a.deps.loginTTL))
	if err == nil {
		id := adminLoginID(secrets[0].ID, a.deps.adminToken)
		secrets[0].ID, secrets[1].ID = id, id
		err = a.deps.ids.InsertLogin(ctx, secrets, "")
	}
	if err != nil {
		attempt.Abort()
		a.answerError(w, r, err)
		return
	}
	attempt.Succeed()
	a.logger.Info("admin token logged in", zap.String("remote", r.RemoteAddr))
	a.recordAs(ctx, audit.Entry{Actor: identity.AdminTokenName, ActorKind: apiwire.ActorAdminToken, Action: audit.Login,
		Target: identity.AdminTokenName, Client: client, Detail: "role owner (admin token)"})
	http.SetCookie(w, identity.LoginCookie(cookie, a.deps.loginTTL, r.TLS != nil))
	writeJSON(w, http.StatusOK, apiwire.Login{Token: bearer, ExpiresAt: secrets[0].ExpiresAt, Role: identity.RoleOwner.String()})
}

// adminLoginID binds an admin token login's id to the admin token: the
// id gets an HMAC of itself keyed by the token, which resolve checks
// against the token configured now, so a changed (or removed) admin
// token ends the logins the old one opened, on every broker.
func adminLoginID(id, adminToken string) string {
	m := hmac.New(sha256.New, []byte(adminToken))
	m.Write([]byte("agent-vault admin login v1\x00" + id))
	return id + "." + hex.EncodeToString(m.Sum(nil))
}

// validAdminLoginID reports whether id is adminLoginID of its own
// prefix under adminToken (constant time).
func validAdminLoginID(id, adminToken string) bool {
	base, _, ok := strings.Cut(id, ".")
	return ok && adminToken != "" && subtle.ConstantTimeCompare([]byte(adminLoginID(base, adminToken)), []byte(id)) == 1
}

// newLogin makes a login of operator: its id and its two secrets, the
// bearer token and the cookie's secret (see login), as stored (hashes
// only) and as handed out.
func newLogin(operator string, created, expires time.Time) (rows []state.LoginRow, token, cookie string, err error) {
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return nil, "", "", err
	}
	token, tokenHash, err := identity.NewToken(identity.KindOperator)
	if err != nil {
		return nil, "", "", err
	}
	cookie, cookieHash, err := identity.NewToken(identity.KindLoginCookie)
	if err != nil {
		return nil, "", "", err
	}
	l := state.LoginRow{ID: "lgn_" + hex.EncodeToString(id), TokenHash: tokenHash, Via: state.LoginViaBearer, Operator: operator, CreatedAt: created, ExpiresAt: expires}
	c := l
	c.TokenHash, c.Via = cookieHash, state.LoginViaCookie
	return []state.LoginRow{l, c}, token, cookie, nil
}

// rehash replaces op's stored password hash, which password just
// matched, by one with the current parameters when it has others
// (identity.NeedsRehash), so that its checks take the time an unknown
// name's do. Only the hash changes: no login ends. A failure is logged;
// the login stands.
func (a *API) rehash(ctx context.Context, op state.OperatorRow, password string) {
	if !identity.NeedsRehash(op.PasswordHash) {
		return
	}
	fresh, err := identity.HashPasswordContext(ctx, password)
	if err == nil {
		_, err = a.deps.ids.RehashOperatorPassword(ctx, op.Name, op.PasswordHash, fresh)
	}
	if err != nil {
		a.logger.Warn("re-hashing an operator's password with the current parameters failed; retried at their next login", zap.String("operator", op.Name), zap.Error(err))
		return
	}
	a.logger.Info("operator's password re-hashed with the current parameters", zap.String("operator", op.Name))
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

// invalidNameEvery is how often, at most, the count of logins with a
// name no operator can have is logged.
const invalidNameEvery = time.Minute

// invalidNameLogin counts a login refused for a name no operator can
// have and logs the count at most once per invalidNameEvery: each is
// neither audited nor logged on its own (an unauthenticated client
// could make every request a write, or a log line).
func (a *API) invalidNameLogin(r *http.Request) {
	a.invalidNames.n.Add(1)
	a.invalidNames.gate.Run(r.Context(), func(context.Context, time.Time) error {
		a.logger.Info("logins refused: names no operator can have", zap.Int64("since_last_report", a.invalidNames.n.Swap(0)),
			zap.String("last_remote", r.RemoteAddr))
		return nil
	})
}

// invalidNames counts the logins invalidNameLogin refused since it last
// logged.
type invalidNames struct {
	n    atomic.Int64
	gate periodic.Gate
}

// logout ends the login used to call it, both its secrets, and clears
// the cookie. For the admin token it does nothing (there is no login to
// end).
func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	c := callerOf(r)
	if c.loginID != "" {
		ctx, cancel := writeContext(r)
		defer cancel()
		if err := a.deps.ids.DeleteLogin(ctx, c.loginID); err != nil {
			a.answerError(w, r, err)
			return
		}
		a.record(r, audit.Logout, c.Name, "")
	}
	http.SetCookie(w, identity.ClearLoginCookie(r.TLS != nil))
	w.WriteHeader(http.StatusNoContent)
}

// loginPurgeStore deletes expired logins.
type loginPurgeStore interface {
	DeleteLoginsExpiredBefore(ctx context.Context, t time.Time) (int, error)
}

// loginPurge deletes expired logins (both secrets of each), at most
// once per its gate's Every. An expired login is refused anyway
// (resolve compares its expiry with the clock): this only keeps the
// table small. The shared state holds it, so a config reload does not
// purge again.
type loginPurge struct {
	store loginPurgeStore
	log   *zap.Logger
	gate  periodic.Gate
}

// newLoginPurge is a loginPurge of store running every every (by now;
// nil is time.Now).
func newLoginPurge(store loginPurgeStore, every time.Duration, now func() time.Time, log *zap.Logger) *loginPurge {
	p := &loginPurge{store: store, log: log}
	p.gate.Every, p.gate.Now = every, now
	return p
}

// Purge deletes the logins expired by now, if a purge is due; a
// failure is retried at the next call.
func (p *loginPurge) Purge(ctx context.Context) error {
	return p.gate.Run(ctx, func(ctx context.Context, now time.Time) error {
		n, err := p.store.DeleteLoginsExpiredBefore(ctx, now)
		if err != nil {
			return fmt.Errorf("deleting expired operator logins: %w", err)
		}
		if n > 0 && p.log != nil {
			p.log.Info("deleted expired operator logins", zap.Int("secrets", n))
		}
		return nil
	})
}
