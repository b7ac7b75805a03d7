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

// RateLimitError refuses a login attempt without checking its
// password: the API answers 429 with Retry-After set to
// RetryAfterSeconds and the error's text.
type RateLimitError struct {
	// Subject is what is limited: "address 192.0.2.1", "operator alice".
	Subject string
	// RetryAfter is when the next attempt will be let through: at least
	// one second, in whole seconds.
	RetryAfter time.Duration
}

// Error is the 429 answer's text: "too many failed logins for
// operator alice; retry in 60s".
func (e *RateLimitError) Error() string {
	return "too many failed logins for " + e.Subject + "; retry in " + e.RetryAfterSeconds() + "s"
}

// HTTPStatus is 429.
func (*RateLimitError) HTTPStatus() int { return http.StatusTooManyRequests }

// RetryAfterSeconds is the Retry-After header's value.
func (e *RateLimitError) RetryAfterSeconds() string {
	return strconv.FormatInt(int64(e.RetryAfter/time.Second), 10)
}
