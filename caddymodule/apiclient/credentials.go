package apiclient

import (
	"context"
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// Credentials lists every credential the server knows, names and
// metadata only (GET /api/v1/credentials). Never nil on success.
func (c *Client) Credentials(ctx context.Context) ([]apiwire.Credential, error) {
	u, err := c.endpoint("api", "v1", "credentials")
	if err != nil {
		return nil, err
	}
	var out apiwire.CredentialList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Credentials == nil {
		out.Credentials = []apiwire.Credential{}
	}
	return out.Credentials, nil
}

// PutCredential stores value under name (PUT /api/v1/credentials/{name}).
// value travels in the body only, never in the URL.
func (c *Client) PutCredential(ctx context.Context, name, value string) (*apiwire.Credential, error) {
	u, err := c.endpoint("api", "v1", "credentials", name)
	if err != nil {
		return nil, err
	}
	var out apiwire.Credential
	if err := c.call(ctx, http.MethodPut, u, apiwire.CredentialPutRequest{Value: &value}, &out, http.StatusOK, http.StatusCreated); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteCredential deletes a credential (DELETE /api/v1/credentials/{name}).
func (c *Client) DeleteCredential(ctx context.Context, name string) error {
	u, err := c.endpoint("api", "v1", "credentials", name)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodDelete, u, nil, nil, http.StatusNoContent, http.StatusOK)
}

// CAPEM returns the PEM certificate of the proxy's CA
// (GET /api/v1/ca.pem, no authentication needed), unchecked.
func (c *Client) CAPEM(ctx context.Context) ([]byte, error) {
	u, err := c.endpoint("api", "v1", "ca.pem")
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
	return a.body, nil
}
