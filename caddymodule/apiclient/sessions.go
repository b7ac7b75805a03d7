package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// CreateSession mints a session (POST /api/v1/sessions).
//
// A session that exists on the server must be revocable whatever else is
// wrong with the answer, so only the id is checked here (ValidID; the
// caller checks the rest once it has arranged revocation), and an answer
// with a valid id that does not decode is returned with only its id set,
// along with the error.
func (c *Client) CreateSession(ctx context.Context, req apiwire.SessionRequest) (*apiwire.Session, error) {
	u, err := c.endpoint("api", "v1", "sessions")
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	a, err := c.do(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, err
	}
	if a.status != http.StatusCreated && a.status != http.StatusOK {
		return nil, c.errorFrom(a)
	}
	return decodeSession(a.body)
}

// CurrentSession returns the session whose token the client holds
// (GET /api/v1/session, authenticated with a session token): its proxy
// URL, CA and placeholders. The server does not send the token back; the
// caller has it.
func (c *Client) CurrentSession(ctx context.Context) (*apiwire.Session, error) {
	u, err := c.endpoint("api", "v1", "session")
	if err != nil {
		return nil, err
	}
	a, err := c.do(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if a.status != http.StatusOK {
		return nil, c.errorFrom(a)
	}
	sess, err := decodeSession(a.body)
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// decodeSession decodes a session answer, id first: a bad value elsewhere
// (say an unparsable expires_at) must not hide the id of a session that
// now exists.
func decodeSession(data []byte) (*apiwire.Session, error) {
	var id struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &id); err != nil {
		return nil, errors.New("malformed response from server")
	}
	if !ValidID(id.ID) {
		return nil, errors.New("server returned an invalid session id")
	}
	var sess apiwire.Session
	if err := json.Unmarshal(data, &sess); err != nil {
		return &apiwire.Session{ID: id.ID}, errors.New("malformed response from server")
	}
	return &sess, nil
}

// RenewSession renews a leased session's lease
// (POST /api/v1/sessions/{id}/renew). A session that has ended is an
// *Error with Status 410 (http.StatusGone); one without a lease, 409.
func (c *Client) RenewSession(ctx context.Context, id string) (*apiwire.LeaseRenewal, error) {
	u, err := c.sessionURL(id, "renew")
	if err != nil {
		return nil, err
	}
	var out apiwire.LeaseRenewal
	if err := c.call(ctx, http.MethodPost, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeSession ends a session (DELETE /api/v1/sessions/{id}). A session
// the server does not know (or, for an agent token, not its own) is an
// *Error with Status 404; a caller that only wants it gone may take that
// as done.
func (c *Client) RevokeSession(ctx context.Context, id string) error {
	u, err := c.sessionURL(id)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodDelete, u, nil, nil, http.StatusNoContent, http.StatusOK)
}

// Sessions lists sessions (GET /api/v1/sessions): an agent token sees its
// own only.
func (c *Client) Sessions(ctx context.Context) ([]apiwire.SessionInfo, error) {
	u, err := c.endpoint("api", "v1", "sessions")
	if err != nil {
		return nil, err
	}
	var out apiwire.SessionList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return out.Sessions, nil
}

// sessionURL is /api/v1/sessions/{id}[/rest...], refusing an id that is
// not ValidID before any I/O.
func (c *Client) sessionURL(id string, rest ...string) (*url.URL, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("invalid session id %q", printable(id, 64))
	}
	return c.endpoint(append([]string{"api", "v1", "sessions", id}, rest...)...)
}
