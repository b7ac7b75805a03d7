package apiclient

import (
	"context"
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// Services lists every defined service (GET /api/v1/services). Never nil
// on success.
func (c *Client) Services(ctx context.Context) ([]apiwire.Service, error) {
	u, err := c.endpoint("api", "v1", "services")
	if err != nil {
		return nil, err
	}
	var out apiwire.ServiceList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Services == nil {
		out.Services = []apiwire.Service{}
	}
	return out.Services, nil
}

// PutService creates or replaces the service svc.Name
// (PUT /api/v1/services/{name}). The answer carries the stored service
// and the server's warnings, such as a credential no store holds yet.
func (c *Client) PutService(ctx context.Context, svc apiwire.Service) (*apiwire.ServicePutResponse, error) {
	u, err := c.endpoint("api", "v1", "services", svc.Name)
	if err != nil {
		return nil, err
	}
	var out apiwire.ServicePutResponse
	if err := c.call(ctx, http.MethodPut, u, svc, &out, http.StatusOK, http.StatusCreated); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteService deletes a service (DELETE /api/v1/services/{name}).
func (c *Client) DeleteService(ctx context.Context, name string) error {
	u, err := c.endpoint("api", "v1", "services", name)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodDelete, u, nil, nil, http.StatusNoContent, http.StatusOK)
}
