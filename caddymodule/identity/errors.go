package identity

import (
	"net/http"
	"strconv"
	"time"
)

// ForbiddenError is a refusal of a known caller: the API answers 403
// with Reason, which says what was refused and why.
type ForbiddenError struct {
	Reason string

	// who and why, when set (by Allowed), let On restate the refusal
	// with the request's method and path.
	who, why string
}

// Error is Reason.
func (e *ForbiddenError) Error() string { return e.Reason }

// HTTPStatus is 403.
func (*ForbiddenError) HTTPStatus() int { return http.StatusForbidden }

// On restates a refusal of Allowed with the route it was asked for
// ("role viewer may not PUT /api/v1/services/x: needs admin"). Other
// refusals already name what they refuse and come back unchanged.
func (e *ForbiddenError) On(method, path string) *ForbiddenError {
	if e.who == "" {
		return e
	}
	return forbidden(e.who, method+" "+path, e.why)
}

// forbidden builds "who may not what[: why]".
func forbidden(who, what, why string) *ForbiddenError {
	r := who + " may not " + what
	if why != "" {
		r += ": " + why
	}
	return &ForbiddenError{Reason: r, who: who, why: why}
}

// InvalidError is a malformed or impossible request: the API answers
// 400 with Reason.
type InvalidError struct{ Reason string }

// Error is Reason.
func (e *InvalidError) Error() string { return e.Reason }

// HTTPStatus is 400.
func (*InvalidError) HTTPStatus() int { return http.StatusBadRequest }

// UnauthenticatedError is a request without usable credentials: the
// API answers 401 with Reason, which never repeats the credential.
type UnauthenticatedError struct{ Reason string }

// Error is Reason.
func (e *UnauthenticatedError) Error() string { return e.Reason }

// HTTPStatus is 401.
func (*UnauthenticatedError) HTTPStatus() int { return http.StatusUnauthorized }

// unauthenticated is a fixed 401 refusal, the value of the package's
// sentinels (ErrNoToken, ErrWrongLogin): a value, so that no caller can
// change what another one answers. errors.As gives a fresh
// *UnauthenticatedError with its text.
type unauthenticated string

func (e unauthenticated) Error() string { return string(e) }

// HTTPStatus is 401.
func (unauthenticated) HTTPStatus() int { return http.StatusUnauthorized }

// As lets errors.As(err, &ue) find a *UnauthenticatedError (a copy).
func (e unauthenticated) As(target any) bool {
	p, ok := target.(**UnauthenticatedError)
	if ok {
		*p = &UnauthenticatedError{Reason: string(e)}
	}
	return ok
}

// serverError is a fixed error that is the server's fault (500).
type serverError string

func (e serverError) Error() string { return string(e) }

// HTTPStatus is 500.
func (serverError) HTTPStatus() int { return http.StatusInternalServerError }

// RateLimitError refuses a login attempt without checking its
// password: the API answers 429 with Retry-After set to
// RetryAfterSeconds and the error's text.
type RateLimitError struct {
	// Subject is which budget is spent, LimitAddress ("from this
	// address") or LimitName ("for this name").
	Subject string
	// RetryAfter is when the next attempt will be let through: at least
	// one second, in whole seconds.
	RetryAfter time.Duration
}

// Error is the 429 answer's text: "too many failed logins for this
// name; retry in 60s".
func (e *RateLimitError) Error() string {
	return "too many failed logins " + e.Subject + "; retry in " + e.RetryAfterSeconds() + "s"
}

// HTTPStatus is 429.
func (*RateLimitError) HTTPStatus() int { return http.StatusTooManyRequests }

// RetryAfterSeconds is the Retry-After header's value.
func (e *RateLimitError) RetryAfterSeconds() string {
	return strconv.FormatInt(int64(e.RetryAfter/time.Second), 10)
}
