package apiclient

import (
	"context"
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// Operators lists every operator, sorted by name (GET /api/v1/operators).
// Never nil on success.
func (c *Client) Operators(ctx context.Context) ([]apiwire.Operator, error) {
	u, err := c.endpoint("api", "v1", "operators")
	if err != nil {
		return nil, err
	}
	var out apiwire.OperatorList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Operators == nil {
		out.Operators = []apiwire.Operator{}
	}
	return out.Operators, nil
}

// CreateOperator creates an operator (POST /api/v1/operators). The
// password travels in the body only.
func (c *Client) CreateOperator(ctx context.Context, req apiwire.OperatorCreateRequest) (*apiwire.Operator, error) {
	u, err := c.endpoint("api", "v1", "operators")
	if err != nil {
		return nil, err
	}
	var out apiwire.Operator
	if err := c.call(ctx, http.MethodPost, u, req, &out, http.StatusCreated, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateOperator changes an operator's role or password
// (PATCH /api/v1/operators/{name}); a new password ends their logins.
func (c *Client) UpdateOperator(ctx context.Context, name string, req apiwire.OperatorPatchRequest) (*apiwire.Operator, error) {
	u, err := c.endpoint("api", "v1", "operators", name)
	if err != nil {
		return nil, err
	}
	var out apiwire.Operator
	if err := c.call(ctx, http.MethodPatch, u, req, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteOperator deletes an operator and ends their logins
// (DELETE /api/v1/operators/{name}).
func (c *Client) DeleteOperator(ctx context.Context, name string) error {
	u, err := c.endpoint("api", "v1", "operators", name)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodDelete, u, nil, nil, http.StatusNoContent, http.StatusOK)
}
