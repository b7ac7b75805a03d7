// Package identity holds the rules of who may do what on the management
// API, without any I/O: the formats of agent, operator-login and
// session tokens and of the login cookie, agent and operator names,
// roles and the one permission table, operator passwords (argon2id),
// the failed-login limiter, and what an agent may ask of a session.
//
// It never touches a database or an HTTP server: the API resolves a
// caller to a Principal from its own stores and asks Allowed; its
// errors carry the HTTP status they stand for (ForbiddenError 403,
// InvalidError 400, UnauthenticatedError, ErrNoToken and ErrWrongLogin
// 401, RateLimitError 429, ErrNotIP 500), so the API maps all of them
// with one check, and their texts are the readable reasons the API
// answers with. Errors without a status (ErrBadHash, a context's) are
// for the caller to decide. No error or text of this package ever
// holds a token or a password, nor a name a login tried.
package identity
