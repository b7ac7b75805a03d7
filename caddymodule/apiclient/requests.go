package apiclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// AccessRequests lists access requests, newest first
// (GET /api/v1/requests[?status=]); status "" lists every status. An
// agent's token sees its own requests only. Never nil on success.
func (c *Client) AccessRequests(ctx context.Context, status string) ([]apiwire.AccessRequest, error) {
	u, err := c.endpoint("api", "v1", "requests")
	if err != nil {
		return nil, err
	}
	if status != "" {
		u.RawQuery = url.Values{"status": {status}}.Encode()
	}
	var out apiwire.AccessRequestList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Requests == nil {
		out.Requests = []apiwire.AccessRequest{}
	}
	return out.Requests, nil
}

// CreateAccessRequest asks for access to a service or a host
// (POST /api/v1/requests), with an agent's or a session's token. A
// pending duplicate is answered with the existing request.
func (c *Client) CreateAccessRequest(ctx context.Context, req apiwire.AccessRequestCreate) (*apiwire.AccessRequest, error) {
	u, err := c.endpoint("api", "v1", "requests")
	if err != nil {
		return nil, err
	}
	var out apiwire.AccessRequest
	if err := c.call(ctx, http.MethodPost, u, req, &out, http.StatusCreated, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// ApproveAccessRequest approves a pending request
// (POST /api/v1/requests/{id}/approve); req.Service, for a host request,
// defines the service to create.
func (c *Client) ApproveAccessRequest(ctx context.Context, id string, req apiwire.AccessRequestApprove) (*apiwire.AccessRequest, error) {
	u, err := c.requestURL(id, "approve")
	if err != nil {
		return nil, err
	}
	var out apiwire.AccessRequest
	if err := c.call(ctx, http.MethodPost, u, req, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// DenyAccessRequest denies a pending request
// (POST /api/v1/requests/{id}/deny) with an optional reason.
func (c *Client) DenyAccessRequest(ctx context.Context, id string, req apiwire.AccessRequestDeny) (*apiwire.AccessRequest, error) {
	u, err := c.requestURL(id, "deny")
	if err != nil {
		return nil, err
	}
	var out apiwire.AccessRequest
	if err := c.call(ctx, http.MethodPost, u, req, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// requestURL is /api/v1/requests/{id}/{action}, refusing an id that is
// not ValidID before any I/O.
func (c *Client) requestURL(id, action string) (*url.URL, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("invalid request id %q", printable(id, 64))
	}
	return c.endpoint("api", "v1", "requests", id, action)
}
