package launcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

const (
	// apiTimeout bounds every management API call so a hung server cannot
	// hang the launcher (and, during revocation, its exit).
	apiTimeout = 30 * time.Second
	// maxResponseBytes caps what we read from the management API.
	maxResponseBytes = 1 << 20
	// maxIDLen caps session ids; they end up in a URL path.
	maxIDLen = 256
)

// newHTTPClient returns the client for the management API. It never uses a
// proxy: av-launch may itself run under another av-launch, and the admin
// token must not travel through (or be refused by) that outer proxy. It does
// not follow redirects either: an API endpoint has no reason to redirect, and
// a redirect must not carry the admin token elsewhere.
func newHTTPClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	return &http.Client{
		Transport: transport,
		Timeout:   apiTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// apiClient talks to the agent-vault management API.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// parseAddr validates the management API base URL.
func parseAddr(addr string) (*url.URL, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("invalid management address %q", addr)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("invalid management address %q: want http(s)://host:port", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid management address %q: no query or fragment allowed", u.Redacted())
	}
	return u, nil
}

// hostPort returns u's host:port, filling in the scheme's default port.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// apiError is an error answer from the management API.
type apiError struct {
	status  int
	message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.status, e.message) }

// createSession asks the server for a new agent session (nil services
// means all). Only the id is validated here; the caller validates the rest
// after it has arranged revocation, so that a malformed session is still
// revoked. For the same reason, an answer with a valid id that does not
// decode is returned with only its id set, along with the error.
func (c *apiClient) createSession(ctx context.Context, services []string, ttl time.Duration) (*apiwire.Session, error) {
	body, err := json.Marshal(apiwire.SessionRequest{Services: services, TTL: formatTTL(ttl)})
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, c.base.JoinPath("api", "v1", "sessions"), body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading response: %w", err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return nil, c.errorFrom(resp.StatusCode, data)
	}
	// The id first, on its own: a bad value elsewhere (say an unparsable
	// expires_at) must not hide the id of a session that now exists.
	var id struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &id); err != nil {
		return nil, errors.New("malformed response from server")
	}
	if !validSessionID(id.ID) {
		return nil, errors.New("server returned an invalid session id")
	}
	var sess apiwire.Session
	if err := json.Unmarshal(data, &sess); err != nil {
		return &apiwire.Session{ID: id.ID}, errors.New("malformed response from server")
	}
	return &sess, nil
}

// credentialNames lists every credential the server knows, so that
// inherited variables of those names (which may hold real values) can be
// kept from the child even when they are outside the session's scope.
func (c *apiClient) credentialNames(ctx context.Context) ([]string, error) {
	resp, err := c.do(ctx, http.MethodGet, c.base.JoinPath("api", "v1", "credentials"), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.errorFrom(resp.StatusCode, data)
	}
	var list apiwire.CredentialList
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, errors.New("malformed credential list from server")
	}
	names := make([]string, 0, len(list.Credentials))
	for _, c := range list.Credentials {
		names = append(names, c.Name)
	}
	return names, nil
}

// revokeSession deletes a session. A session the server no longer knows
// counts as revoked.
func (c *apiClient) revokeSession(ctx context.Context, id string) error {
	resp, err := c.do(ctx, http.MethodDelete, c.base.JoinPath("api", "v1", "sessions", id), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent, http.StatusNotFound:
		return nil
	}
	return c.errorFrom(resp.StatusCode, data)
}

func (c *apiClient) do(ctx context.Context, method string, u *url.URL, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.http.Do(req)
}

// errorFrom turns an error answer into an apiError whose message is safe to
// print: control characters stripped, length capped and the admin token
// redacted should the server ever echo it.
func (c *apiClient) errorFrom(status int, body []byte) error {
	var e apiwire.Error
	_ = json.Unmarshal(body, &e)
	msg := e.Error
	if c.token != "" {
		msg = strings.ReplaceAll(msg, c.token, "[redacted]")
	}
	msg = printable(msg, 200)
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &apiError{status: status, message: msg}
}

// printable drops non-printable runes from s and truncates it to max runes.
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

// validSessionID reports whether id is safe to use as a URL path segment:
// unreserved characters only, and not a dot segment that would change the path.
func validSessionID(id string) bool {
	if id == "" || len(id) > maxIDLen || id == "." || id == ".." {
		return false
	}
	for _, r := range id {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		case strings.ContainsRune("-._~", r):
		default:
			return false
		}
	}
	return true
}

// formatTTL renders d as Go duration text without zero tails ("1h", not
// "1h0m0s"), which reads better in server logs and still parses.
func formatTTL(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
