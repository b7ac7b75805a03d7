package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/sessions"
)

// Kind is the kind of a bearer token, told by its prefix.
type Kind uint8

// Token kinds. KindOther is anything without a known prefix: the API
// compares it with the admin token (in constant time) and otherwise
// refuses it.
const (
	KindOther Kind = iota
	KindAgent
	KindOperator
	KindSession
	// KindLoginCookie is the second secret of an operator's login, the
	// one only the login cookie carries. It is never a bearer token:
	// browsers send a host's cookies to every port of it (cookies
	// ignore ports), so any other program listening on the host
	// (another developer server on localhost, say) receives the cookie
	// whenever the browser visits it. Had the cookie held the login
	// token, that program could replay it as a Bearer header with the
	// operator's full rights; holding a secret of its own, the cookie
	// is worth only what RequestToken and CheckCookieRequest let a
	// cookie do (read, and log out).
	KindLoginCookie
)

// Token prefixes, so that a leaked token is easy to recognise (in logs,
// by secret scanners) and the API knows where to look it up.
const (
	AgentTokenPrefix    = "avt_"
	OperatorTokenPrefix = "avo_"
	SessionTokenPrefix  = sessions.TokenPrefix
	// LoginCookiePrefix starts a login's cookie secret (KindLoginCookie).
	LoginCookiePrefix = "avc_"
)

// MaxTokenLength bounds a bearer token (in bytes).
const MaxTokenLength = 512

// tokenSecretBytes is the randomness of a generated token: 256 bits.
const tokenSecretBytes = 32

// String names the kind for messages ("agent token").
func (k Kind) String() string {
	switch k {
	case KindAgent:
		return "agent token"
	case KindOperator:
		return "operator login token"
	case KindSession:
		return "session token"
	case KindLoginCookie:
		return "login cookie secret"
	}
	return "other token"
}

func (k Kind) prefix() string {
	switch k {
	case KindAgent:
		return AgentTokenPrefix
	case KindOperator:
		return OperatorTokenPrefix
	case KindSession:
		return SessionTokenPrefix
	case KindLoginCookie:
		return LoginCookiePrefix
	}
	return ""
}

// NewToken makes a fresh token of kind (agent, operator login, login
// cookie or session): its prefix and 256 random bits in unpadded base64url. It
// returns the token, to hand out once, and its hash, to keep. KindOther
// is an error: the admin token comes from the configuration.
func NewToken(kind Kind) (token string, hash [32]byte, err error) {
	p := kind.prefix()
	if p == "" {
		return "", [32]byte{}, errors.New("identity: no token format for " + kind.String())
	}
	secret := make([]byte, tokenSecretBytes)
	if _, err := rand.Read(secret); err != nil {
		return "", [32]byte{}, err
	}
	token = p + base64.RawURLEncoding.EncodeToString(secret)
	return token, HashToken(token), nil
}

// HashToken is the SHA-256 of token, which is all the state database
// keeps of agent, login and session tokens. Tokens carry 256 random
// bits, so a fast hash is enough: there is nothing to guess.
func HashToken(token string) [32]byte {
	return sha256.Sum256([]byte(token))
}

// KindOf tells a token's kind by its prefix alone; it does not check
// the rest (the lookup of its hash does).
func KindOf(token string) Kind {
	switch {
	case strings.HasPrefix(token, AgentTokenPrefix):
		return KindAgent
	case strings.HasPrefix(token, OperatorTokenPrefix):
		return KindOperator
	case strings.HasPrefix(token, SessionTokenPrefix):
		return KindSession
	case strings.HasPrefix(token, LoginCookiePrefix):
		return KindLoginCookie
	}
	return KindOther
}

// ErrNoToken is the error for a request that carries no credentials
// at all (ParseBearer of an empty header, RequestToken, Allowed of no
// principal): 401. Compare with errors.Is; errors.As gives a fresh
// *UnauthenticatedError.
var ErrNoToken error = unauthenticated("no credentials: send Authorization: Bearer <token>")

// ParseBearer returns the token of an Authorization header value:
// the scheme "Bearer" (any case), one or more spaces, and 1 to
// MaxTokenLength visible ASCII characters (no spaces). Anything else is
// an *UnauthenticatedError (ErrNoToken for an empty header) whose text
// never repeats the header, and so is a login cookie's secret
// (KindLoginCookie), which only the cookie may carry.
func ParseBearer(header string) (string, error) {
	if header == "" {
		return "", ErrNoToken
	}
	const scheme = "bearer"
	if len(header) < len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", &UnauthenticatedError{Reason: "the Authorization header is not a Bearer token: send Authorization: Bearer <token>"}
	}
	rest := header[len(scheme):]
	token := strings.TrimLeft(rest, " ")
	if len(token) == len(rest) {
		return "", &UnauthenticatedError{Reason: "the Authorization header is not a Bearer token: send Authorization: Bearer <token>"}
	}
	if err := checkTokenText(token); err != nil {
		return "", err
	}
	if KindOf(token) == KindLoginCookie {
		// The cookie's secret is worth less than the login's token
		// (see KindLoginCookie): it must never buy a Bearer's rights.
		return "", &UnauthenticatedError{Reason: "a login cookie's secret is not a bearer token: send the login's token (avo_...) instead"}
	}
	return token, nil
}

// checkTokenText enforces the token grammar shared by the header and
// the cookie.
func checkTokenText(token string) error {
	if token == "" {
		return &UnauthenticatedError{Reason: "the bearer token is empty"}
	}
	if len(token) > MaxTokenLength {
		return &UnauthenticatedError{Reason: "the bearer token is longer than 512 bytes"}
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return &UnauthenticatedError{Reason: "the bearer token holds a space, control or non-ASCII character"}
		}
	}
	return nil
}

// Bounds of the configured admin token.
const (
	MinAdminTokenLength = 16
	MaxAdminTokenLength = MaxTokenLength
)

// ValidAdminToken checks the configured admin token (the app calls it
// at provision): one that the API could never match is a configuration
// error, not a silent lockout. It must be 16 to 512 bytes of visible
// ASCII without spaces (what ParseBearer reads) and must not start
// with avt_, avo_, avs_ or avc_ (the API would look it up as an agent,
// login, session or cookie secret and never compare it with the admin
// token). The
// error never repeats the token.
func ValidAdminToken(tok string) error {
	return validStaticToken("admin token", " (agent-vault generates ava_ and 64 hex digits)", tok)
}

// ValidMetricsToken checks the configured metrics token by the admin
// token's rule (see ValidAdminToken), for the same reasons.
func ValidMetricsToken(tok string) error { return validStaticToken("metrics token", "", tok) }

// validStaticToken is the rule of a configured token; what names it in
// the errors, hint follows the length error.
func validStaticToken(what, hint, tok string) error {
	switch {
	case len(tok) < MinAdminTokenLength:
		return fmt.Errorf("the %s is %d bytes long: use at least %d%s", what, len(tok), MinAdminTokenLength, hint)
	case len(tok) > MaxAdminTokenLength:
		return fmt.Errorf("the %s is longer than %d bytes, the longest bearer token the API reads", what, MaxAdminTokenLength)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("the %s holds a space, control or non-ASCII character (at byte %d): it could never be sent as a Bearer token", what, i)
		}
	}
	if k := KindOf(tok); k != KindOther {
		return fmt.Errorf("the %s starts with %s, the prefix of %ss: the API would look it up as one and never accept it as the %s", what, k.prefix(), k, what)
	}
	return nil
}
