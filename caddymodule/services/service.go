package services

import (
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strings"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// Auth types.
const (
	AuthBearer      = "bearer"
	AuthBasic       = "basic"
	AuthAPIKey      = "api-key"
	AuthCustom      = "custom"
	AuthQuery       = "query"
	AuthPassthrough = "passthrough"
)

// DefaultAPIKeyHeader is the header an api-key auth uses when none is set
// (written in canonical form, X-Api-Key; header names are case-insensitive).
const DefaultAPIKeyHeader = "X-API-Key"

// Auth says how a service's credential is put into a request. Which
// fields apply depends on Type; setting a field the type does not use is
// a configuration error.
type Auth struct {
	Type     string            `json:"type"`               // bearer | basic | api-key | custom | query | passthrough
	Token    string            `json:"token,omitempty"`    // bearer: credential name
	Username string            `json:"username,omitempty"` // basic: literal username, may contain {{ NAME }} templates
	Password string            `json:"password,omitempty"` // basic: credential name (optional: empty password allowed)
	Key      string            `json:"key,omitempty"`      // api-key and query: credential name
	Header   string            `json:"header,omitempty"`   // api-key: header name (default "X-API-Key")
	Prefix   string            `json:"prefix,omitempty"`   // api-key: literal prefix before the value, e.g. "Token "
	Headers  map[string]string `json:"headers,omitempty"`  // custom: header name -> template with {{ NAME }} references
	Param    string            `json:"param,omitempty"`    // query: query parameter name
}

// Service is one upstream API the agent may reach, and how to
// authenticate to it.
type Service struct {
	Name           string `json:"name"`
	Host           string `json:"host"`
	Auth           Auth   `json:"auth"`
	AllowCleartext bool   `json:"allow_cleartext,omitempty"` // inject even over plain http:// (off by default)
	// AllowUpgrades lists the protocols (Upgrade header tokens, such as
	// "h2c" or "tcp", compared case-insensitively) a request that
	// carried a secret may switch to. The proxy cannot scan what an
	// upgraded connection sends back, so any protocol not listed is
	// refused with 403 before anything goes upstream. WebSocket is
	// always allowed. Default: none.
	AllowUpgrades []string `json:"allow_upgrades,omitempty"`
	// Methods, when set, are the only HTTP methods agents may send to
	// the service, in upper case (["GET", "HEAD"] for read-only); any
	// other is refused with 403 before anything leaves. Default: every
	// method.
	Methods []string `json:"methods,omitempty"`
	// Paths, when set, limit the request paths: globs on the escaped
	// path as sent (the grammar of the host's path part: '*' matches
	// any run of characters, '/' included), allowed unless written
	// with a leading '!', which denies. A request must match an allow
	// entry (when there is one) and no deny entry, else 403 before
	// anything leaves: ["/repos/*", "!/repos/*/admin/*"]. Deny
	// entries also match the path as servers may read it (foldPath:
	// unreserved escapes decoded, lower case, runs of '/' as one). A
	// path with "." or ".." segments, ';', a '\', a malformed escape,
	// or an encoded '/', '\' or NUL (which a server may route elsewhere
	// than it reads) matches no allow entry and every deny entry.
	// Default: every path.
	Paths []string `json:"paths,omitempty"`
	// RateLimit is "N/s", "N/m" or "N/h": each session may send N
	// requests per second, minute or hour through this service, in
	// bursts of up to N (a token bucket); beyond it the proxy answers
	// 429 with Retry-After. Default: no limit.
	RateLimit string `json:"rate_limit,omitempty"`
	// MaxRequestBody caps a request body ("10MiB", "500kB": the size
	// syntax of Caddy's request_body max_size): a larger
	// Content-Length is refused with 413 before anything leaves, and a
	// body of unknown length is cut at the cap (nothing past it is
	// sent) and answered 413. Default: no cap.
	MaxRequestBody string `json:"max_request_body,omitempty"`
	// BodySubstitution, when false, leaves the placeholders of request
	// bodies unswapped: a body that carries one is then refused with
	// 403 (fail closed), as a body of a type that is never rewritten
	// is. Default true: placeholders in JSON, form, multipart and text
	// bodies are swapped under the rules of headers.
	BodySubstitution *bool `json:"body_substitution,omitempty"`
	// Intercept false relays the service's CONNECT tunnels as raw
	// bytes instead of terminating their TLS with a leaf of the
	// proxy's CA: the agent sees the upstream's own certificate, so
	// clients that pin certificates (and package managers with their
	// own trust) work, and the tunnel costs no TLS interception. The
	// proxy reads only the TLS ClientHello, whose SNI must name the
	// CONNECT's host (else the tunnel is refused with a TLS alert and
	// the host is never contacted). Nothing inside is seen, so such a
	// service can carry no credential and no request rule: only auth
	// type passthrough, on a host name (a client sends no SNI for an
	// IP address) without a path, and none of allow_cleartext,
	// allow_upgrades, methods, paths, rate_limit, max_request_body or
	// body_substitution.
	// When another service in the session's scope that intercepts
	// also covers the host and port, interception wins (see
	// [Table.RawTunnel]). Default: true (omitted).
	Intercept *bool `json:"intercept,omitempty"`
}

// Validate checks the whole service definition: name, host pattern and
// auth (known type, required fields present, unused fields empty, valid
// credential and header names, well-formed templates).
func (s Service) Validate() error {
	_, _, err := s.compile()
	return err
}

// Credentials returns the sorted, unique credential names the service's
// auth references. It returns nil for an invalid auth.
func (s Service) Credentials() []string {
	a, err := compileAuth(s.Auth)
	if err != nil {
		return nil
	}
	return a.creds
}

// compile validates s and returns its parsed pattern and auth.
func (s Service) compile() (HostPattern, compiledAuth, error) {
	if err := validateServiceName(s.Name); err != nil {
		return HostPattern{}, compiledAuth{}, err
	}
	p, err := ParseHostPattern(s.Host)
	if err != nil {
		return HostPattern{}, compiledAuth{}, fmt.Errorf("service %q: %w", s.Name, err)
	}
	a, err := compileAuth(s.Auth)
	if err != nil {
		return HostPattern{}, compiledAuth{}, fmt.Errorf("service %q: auth: %w", s.Name, err)
	}
	for _, proto := range s.AllowUpgrades {
		if !validUpgradeToken(proto) {
			return HostPattern{}, compiledAuth{}, fmt.Errorf("service %q: allow_upgrades: %q is not a protocol name (an HTTP token such as \"h2c\", optionally /version)", s.Name, proto)
		}
	}
	if _, err := compileRules(s); err != nil {
		return HostPattern{}, compiledAuth{}, fmt.Errorf("service %q: %w", s.Name, err)
	}
	if err := checkIntercept(s, p); err != nil {
		return HostPattern{}, compiledAuth{}, fmt.Errorf("service %q: %w", s.Name, err)
	}
	return p, a, nil
}

// IsValidName reports whether name follows ^[a-z0-9][a-z0-9_.-]{0,63}$,
// the grammar of service names, which agent and operator names share
// (package identity), so that every name the API takes reads the same.
func IsValidName(name string) bool {
	ok := name != "" && len(name) <= 64
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '.' || c == '-')
	}
	return ok
}

// validateServiceName enforces IsValidName with a readable error.
func validateServiceName(name string) error {
	if !IsValidName(name) {
		return fmt.Errorf("invalid service name %q: use 1-64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit", name)
	}
	return nil
}

// compiledAuth is an Auth checked and parsed once for the hot path.
type compiledAuth struct {
	typ     string
	creds   []string // sorted, unique
	header  string   // api-key: canonical header name
	prefix  string   // api-key
	token   string   // bearer, api-key, query: the one credential
	user    template // basic
	pass    string   // basic: credential name or ""
	headers []customHeader
	param   string // query
}

type customHeader struct {
	name string // canonical
	tmpl template
}

// authFields lists, per type, the fields it uses; the first group is
// required, the second optional. Everything else must be empty.
var authFields = map[string]struct{ required, optional []string }{
	AuthBearer:      {required: []string{"token"}},
	AuthBasic:       {optional: []string{"username", "password"}},
	AuthAPIKey:      {required: []string{"key"}, optional: []string{"header", "prefix"}},
	AuthCustom:      {required: []string{"headers"}},
	AuthQuery:       {required: []string{"key", "param"}},
	AuthPassthrough: {},
}

// setFields returns the JSON names of the non-empty fields besides Type.
func (a Auth) setFields() []string {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"token", a.Token != ""},
		{"username", a.Username != ""},
		{"password", a.Password != ""},
		{"key", a.Key != ""},
		{"header", a.Header != ""},
		{"prefix", a.Prefix != ""},
		{"headers", len(a.Headers) > 0},
		{"param", a.Param != ""},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	return set
}

func compileAuth(a Auth) (compiledAuth, error) {
	fields, known := authFields[a.Type]
	if !known {
		return compiledAuth{}, fmt.Errorf("unknown type %q (want bearer, basic, api-key, custom, query or passthrough)", a.Type)
	}
	set := a.setFields()
	for _, f := range set {
		if !slices.Contains(fields.required, f) && !slices.Contains(fields.optional, f) {
			return compiledAuth{}, fmt.Errorf("type %q does not use field %q", a.Type, f)
		}
	}
	for _, f := range fields.required {
		if !slices.Contains(set, f) {
			return compiledAuth{}, fmt.Errorf("type %q requires field %q", a.Type, f)
		}
	}

	c := compiledAuth{typ: a.Type}
	switch a.Type {
	case AuthBearer:
		if err := checkCredName("token", a.Token); err != nil {
			return compiledAuth{}, err
		}
		c.token = a.Token
		c.creds = []string{a.Token}
	case AuthBasic:
		if a.Username == "" && a.Password == "" {
			return compiledAuth{}, errors.New(`type "basic" needs "username", "password" or both`)
		}
		user, err := parseTemplate(a.Username)
		if err != nil {
			return compiledAuth{}, fmt.Errorf("username: %w", err)
		}
		for _, lit := range user.literals() {
			if strings.IndexByte(lit, ':') >= 0 {
				return compiledAuth{}, errors.New(`username: ':' is not allowed in a basic auth username`)
			}
			if !validHeaderValue(lit) {
				return compiledAuth{}, errors.New("username: control characters are not allowed")
			}
		}
		if a.Password != "" {
			if err := checkCredName("password", a.Password); err != nil {
				return compiledAuth{}, err
			}
		}
		c.user, c.pass = user, a.Password
		c.creds = user.creds(nil)
		if a.Password != "" {
			c.creds = append(c.creds, a.Password)
		}
		if len(c.creds) == 0 {
			return compiledAuth{}, errors.New(`no credential: set "password" or use {{ NAME }} in "username"`)
		}
	case AuthAPIKey:
		if err := checkCredName("key", a.Key); err != nil {
			return compiledAuth{}, err
		}
		c.header = textproto.CanonicalMIMEHeaderKey(DefaultAPIKeyHeader)
		if a.Header != "" {
			if err := checkHeaderName(a.Header); err != nil {
				return compiledAuth{}, fmt.Errorf("header: %w", err)
			}
			c.header = textproto.CanonicalMIMEHeaderKey(a.Header)
		}
		if !validHeaderValue(a.Prefix) {
			return compiledAuth{}, errors.New("prefix: control characters are not allowed")
		}
		c.token, c.prefix = a.Key, a.Prefix
		c.creds = []string{a.Key}
	case AuthCustom:
		for name, value := range a.Headers {
			if err := checkHeaderName(name); err != nil {
				return compiledAuth{}, fmt.Errorf("headers: %w", err)
			}
			canon := textproto.CanonicalMIMEHeaderKey(name)
			for _, h := range c.headers {
				if h.name == canon {
					return compiledAuth{}, fmt.Errorf("headers: %q is set twice", canon)
				}
			}
			tmpl, err := parseTemplate(value)
			if err != nil {
				return compiledAuth{}, fmt.Errorf("headers: %q: %w", name, err)
			}
			for _, lit := range tmpl.literals() {
				if !validHeaderValue(lit) {
					return compiledAuth{}, fmt.Errorf("headers: %q: control characters are not allowed", name)
				}
			}
			c.headers = append(c.headers, customHeader{name: canon, tmpl: tmpl})
			c.creds = tmpl.creds(c.creds)
		}
		if len(c.creds) == 0 {
			return compiledAuth{}, errors.New(`headers: no {{ NAME }} credential reference (use type "passthrough" for a service without credentials)`)
		}
		// Map order is random; keep injection order deterministic.
		slices.SortFunc(c.headers, func(x, y customHeader) int { return strings.Compare(x.name, y.name) })
	case AuthQuery:
		if err := checkCredName("key", a.Key); err != nil {
			return compiledAuth{}, err
		}
		if len(a.Param) > 256 || strings.ContainsFunc(a.Param, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return compiledAuth{}, fmt.Errorf("param: invalid query parameter name %q", a.Param)
		}
		c.token, c.param = a.Key, a.Param
		c.creds = []string{a.Key}
	case AuthPassthrough:
	}
	slices.Sort(c.creds)
	c.creds = slices.Compact(c.creds)
	return c, nil
}

func checkCredName(field, name string) error {
	if err := storebackends.ValidateName(name); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// checkHeaderName accepts RFC 9110 tokens, except headers that belong to
// the connection or the proxy, or that framing depends on: injecting those
// would break or smuggle requests.
func checkHeaderName(name string) error {
	if name == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("invalid header name %q", name)
		}
	}
	lower := strings.ToLower(name)
	switch lower {
	case "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length":
		return fmt.Errorf("header %q cannot be set by a service", name)
	}
	if strings.HasPrefix(lower, "proxy-") {
		return fmt.Errorf("header %q cannot be set by a service", name)
	}
	return nil
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validHeaderValue reports whether s may appear in a header value: no
// control characters except tab (CR and LF would split the header).
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
