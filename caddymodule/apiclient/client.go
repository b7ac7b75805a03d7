// Package apiclient is the client of the agent-vault management API
// (/api/v1/...), shared by av-launch and the agent-vault CLI.
//
// It decodes the server's answers into the apiwire types, never uses a
// proxy, follows no redirect, times out, and bounds what it reads. An
// error answer becomes an *Error carrying the server's own words, made
// safe to print. Endpoint methods live in one file per resource
// (sessions.go, credentials.go, ...), all built on the helpers here.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

const (
	// DefaultAddr is the management API address of a default install.
	DefaultAddr = "http://127.0.0.1:14321"
	// DefaultTimeout bounds every call, so that a hung server cannot hang
	// its client (and, for av-launch, its exit).
	DefaultTimeout = 30 * time.Second
	// MaxResponseBytes caps what is read of one answer.
	MaxResponseBytes = 1 << 20
	// MaxMessageRunes caps an error message from the server.
	MaxMessageRunes = 500
	// maxTokenLen mirrors the server's bearer token bound.
	maxTokenLen = 512
	// maxIDLen caps ids the server hands out; they end up in URL paths.
	maxIDLen = 256
)

// Client talks to one agent-vault server with one token. It is safe for
// concurrent use.
type Client struct {
	base    *url.URL
	token   string
	http    *http.Client
	timeout time.Duration
	// streamIdle bounds a stream's silence (DefaultStreamIdle when 0;
	// tests shorten it).
	streamIdle time.Duration
}

// Option configures New.
type Option func(*options)

type options struct {
	transport    http.RoundTripper
	timeout      time.Duration
	addrSource   string
	insecureHTTP bool
}

// WithTransport replaces the HTTP transport (tests, custom TLS). The
// default is a clone of http.DefaultTransport with Proxy set to nil; a
// transport given here is used as is, so it should not use a proxy
// either. Redirects stay refused and the timeout stays in force.
func WithTransport(rt http.RoundTripper) Option {
	return func(o *options) { o.transport = rt }
}

// WithTimeout replaces DefaultTimeout for every call (d > 0).
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithAddrSource names where the address came from in New's errors
// ("--addr"); the default is "AGENT_VAULT_ADDR".
func WithAddrSource(name string) Option {
	return func(o *options) {
		if name != "" {
			o.addrSource = name
		}
	}
}

// InsecureHTTPEnv names the variable that, set to 1, lets av-launch and
// the CLI talk plain http:// to a management API that is not on
// loopback (WithInsecureHTTP).
const InsecureHTTPEnv = "AGENT_VAULT_INSECURE_HTTP"

// WithInsecureHTTP allows plain http:// to a host that is not loopback.
// Without it New refuses such an address: the token would cross the
// network in clear. Callers set it from $AGENT_VAULT_INSECURE_HTTP=1.
func WithInsecureHTTP(allow bool) Option {
	return func(o *options) { o.insecureHTTP = allow }
}

// New returns a client of the server at addr (http(s)://host[:port][/prefix])
// that authenticates with token, sent as a Bearer token; an empty token
// sends none (enough for CAPEM, or to check the address first and add
// the token with WithToken). It checks both before any I/O; its errors
// never hold the token, and show of the address only its scheme and
// host. Plain http:// is refused unless the host is loopback
// (IsLoopback) or WithInsecureHTTP allows it.
func New(addr, token string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultTimeout, addrSource: "AGENT_VAULT_ADDR"}
	for _, opt := range opts {
		opt(&o)
	}
	base, err := ParseAddr(o.addrSource, addr)
	if err != nil {
		return nil, err
	}
	if base.Scheme == "http" && !IsLoopback(base) && !o.insecureHTTP {
		return nil, fmt.Errorf("%s %q is plain http:// to a host that is not loopback: the token would cross the network in clear; use https://, or set %s=1 if that network is trusted", o.addrSource, shownAddr(base), InsecureHTTPEnv)
	}
	if err := checkToken(token); err != nil {
		return nil, err
	}
	if o.transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// No proxy: a client may itself run under av-launch, and its
		// token must not travel through (or be refused by) that proxy.
		t.Proxy = nil
		o.transport = t
	}
	return &Client{
		base:  base,
		token: token,
		http: &http.Client{
			Transport: o.transport,
			Timeout:   o.timeout,
			// An API endpoint has no reason to redirect, and a redirect
			// must not carry the token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		timeout: o.timeout,
	}, nil
}

// WithToken returns a client of the same server that authenticates with
// token instead (say, a session token for CurrentSession).
func (c *Client) WithToken(token string) (*Client, error) {
	if err := checkToken(token); err != nil {
		return nil, err
	}
	c2 := *c
	c2.token = token
	return &c2, nil
}

// Addr returns a copy of the server's base URL.
func (c *Client) Addr() *url.URL {
	u := *c.base
	return &u
}

// ParseAddr validates a management API base URL; source names where it
// came from ("AGENT_VAULT_ADDR", "--addr"). Its errors show only the
// scheme and host of addr: a user, password, path or query in it may be
// a secret pasted in the wrong place.
func ParseAddr(source, addr string) (*url.URL, error) {
	if addr == "" {
		return nil, fmt.Errorf("%s is empty: use http://host:port", source)
	}
	if !strings.Contains(addr, "://") {
		return nil, fmt.Errorf("%s %q has no scheme: use http://host:port", source, printable(hostPart(addr), 200))
	}
	u, err := url.Parse(addr)
	if err != nil {
		// url's own error repeats addr, password included: say less.
		return nil, fmt.Errorf("%s is not a valid URL: use http://host:port", source)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s %q must not carry a user or password: use http://host:port and AGENT_VAULT_TOKEN", source, shownAddr(u))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%s %q: use http(s)://host:port", source, shownAddr(u))
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%s %q: the port must be 1..65535", source, shownAddr(u))
		}
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%s %q: no query or fragment allowed", source, shownAddr(u))
	}
	return u, nil
}

// shownAddr is what messages show of an address: scheme and host, never
// a user, password, path or query.
func shownAddr(u *url.URL) string {
	return printable(u.Scheme+"://"+u.Host, 200)
}

// hostPart is the host of an address without a scheme, as far as it can
// be told: before any path, query or fragment, after any userinfo.
func hostPart(addr string) string {
	if i := strings.IndexAny(addr, "/?#"); i >= 0 {
		addr = addr[:i]
	}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		addr = addr[i+1:]
	}
	return addr
}

// IsLoopback reports whether u's host is loopback: an IP in 127.0.0.0/8
// or ::1, or the name localhost. Only there may a default token file go
// by itself, and plain http:// carry a token.
func IsLoopback(u *url.URL) bool {
	h := u.Hostname()
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// checkToken refuses a token that could not travel in an Authorization
// header, without ever echoing it.
func checkToken(token string) error {
	if len(token) > maxTokenLen {
		return fmt.Errorf("token is longer than %d bytes", maxTokenLen)
	}
	for i := 0; i < len(token); i++ {
		if token[i] <= ' ' || token[i] >= 0x7f {
			return errors.New("token holds a space, control or non-ASCII character: check the token file or AGENT_VAULT_TOKEN")
		}
	}
	return nil
}

// Error is an error answer (4xx, 5xx) from the server.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Message is the server's own words (apiwire.Error), control
	// characters stripped, length capped and the client's token, should
	// the server ever echo it, replaced by [redacted]; the status text if
	// the server said nothing.
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Message) }

// StatusOf returns the status of an *Error in err's chain, 0 if none.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// ErrUnreachable is in the chain of the error of a call that found no
// server listening at the address.
var ErrUnreachable = errors.New("agent-vault server not reachable")

// unreachableError says which server could not be reached and how to
// start one.
type unreachableError struct {
	addr string
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("the agent-vault server at %s is not reachable (connection refused): start it with `make run` (in a checkout) or `agent-vault server`, or point AGENT_VAULT_ADDR at a running one", e.addr)
}

func (e *unreachableError) Unwrap() error { return ErrUnreachable }

// endpoint returns the URL of the path made of segments under the base
// URL. Each segment is escaped, so a name cannot add a path level; an
// empty or dot segment, which would change the path, is refused.
func (c *Client) endpoint(segments ...string) (*url.URL, error) {
	u := *c.base
	p := strings.TrimSuffix(u.Path, "/")
	raw := strings.TrimSuffix(u.EscapedPath(), "/")
	for _, s := range segments {
		if s == "" || s == "." || s == ".." {
			return nil, fmt.Errorf("invalid path segment %q", printable(s, 64))
		}
		p += "/" + s
		raw += "/" + url.PathEscape(s)
	}
	u.Path, u.RawPath = p, raw
	if u.EscapedPath() != raw {
		return nil, errors.New("invalid path")
	}
	return &u, nil
}

// answer is a response read in full.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request and reads its answer (at most MaxResponseBytes).
// Transport failures come back as errors that say what to do.
func (c *Client) do(ctx context.Context, method string, u *url.URL, body []byte) (*answer, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of the agent-vault server at %s: %w", shownAddr(c.base), c.transportError(ctx, err))
	}
	if len(data) > MaxResponseBytes {
		return nil, fmt.Errorf("the agent-vault server at %s answered more than %d bytes", shownAddr(c.base), MaxResponseBytes)
	}
	return &answer{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// transportError rewrites a failed exchange into an error that says what
// happened and what to do. The URL in Go's errors holds no secret (New
// refuses userinfo), but the plain words read better.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return &unreachableError{addr: shownAddr(c.base)}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return fmt.Errorf("the agent-vault server at %s did not answer within %v", shownAddr(c.base), c.timeout)
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	return fmt.Errorf("talking to the agent-vault server at %s: %w", shownAddr(c.base), err)
}

// call sends in (JSON-encoded; nil for no body) and, if the status is one
// of ok, decodes the answer into out (nil to ignore it). Any other status
// is an *Error.
func (c *Client) call(ctx context.Context, method string, u *url.URL, in, out any, ok ...int) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	a, err := c.do(ctx, method, u, body)
	if err != nil {
		return err
	}
	if !statusIn(a.status, ok) {
		return c.errorFrom(a)
	}
	if out != nil {
		if err := json.Unmarshal(a.body, out); err != nil {
			return malformed(method, u)
		}
	}
	return nil
}

func statusIn(status int, ok []int) bool {
	for _, s := range ok {
		if s == status {
			return true
		}
	}
	return false
}

// malformed is the error for an answer that does not decode; it holds
// nothing of the answer (which might be a session with its token).
func malformed(method string, u *url.URL) error {
	return fmt.Errorf("malformed response from server to %s %s", method, u.EscapedPath())
}

// errorFrom turns an error answer into an *Error whose message is safe
// to print.
func (c *Client) errorFrom(a *answer) *Error {
	var msg string
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(a.body, &e) == nil {
		msg = e.Error
	} else if mt, _, _ := mime.ParseMediaType(a.header.Get("Content-Type")); mt == "text/plain" {
		msg = string(a.body) // a proxy or Caddy itself answered
	}
	msg = c.sanitize(msg)
	if msg == "" {
		msg = http.StatusText(a.status)
	}
	return &Error{Status: a.status, Message: msg}
}

// sanitize makes server text safe to print: control characters dropped
// first (so none can split the token and hide it from the redaction),
// then the client's own token redacted, then the length capped (after the
// redaction, so a cut cannot leave half a token).
func (c *Client) sanitize(msg string) string {
	msg = stripControl(msg)
	msg = redactToken(msg, c.token)
	return printable(msg, MaxMessageRunes)
}

// stripControl drops every non-printable rune, turning line breaks and
// tabs into spaces.
func stripControl(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case !unicode.IsPrint(r):
			return -1
		}
		return r
	}, s)
}

// redactToken replaces each occurrence of token in s that stands as a
// whole token: not glued to a letter, digit, '_' or '-' (the characters
// tokens are made of). A short token such as "t" therefore never garbles
// the words around it, while an echoed token is always hidden.
func redactToken(s, token string) string {
	if token == "" {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, token)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(token)
		whole := (i == 0 || !tokenByte(s[i-1])) && (end == len(s) || !tokenByte(s[end]))
		b.WriteString(s[:i])
		if whole {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(token)
		}
		s = s[end:]
	}
}

func tokenByte(c byte) bool {
	return c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// printable drops non-printable runes from s, trims it and truncates it
// to max runes (marking the cut with "...").
func printable(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if !unicode.IsPrint(r) {
			continue
		}
		if n == max {
			b.WriteString("...")
			break
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// Printable is printable for callers that show other untrusted server
// text (names, hosts): non-printable runes dropped, at most max runes.
func Printable(s string, max int) string { return printable(s, max) }

// ValidID reports whether id (a session or request id from the server) is
// safe to use as a URL path segment: unreserved characters only, and not
// a dot segment.
func ValidID(id string) bool {
	if id == "" || len(id) > maxIDLen || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~':
		default:
			return false
		}
	}
	return true
}
