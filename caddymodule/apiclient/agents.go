package apiclient

import (
	"context"
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// Agents lists every agent, sorted by name (GET /api/v1/agents). Never
// nil on success; no token is listed.
func (c *Client) Agents(ctx context.Context) ([]apiwire.Agent, error) {
	u, err := c.endpoint("api", "v1", "agents")
	if err != nil {
		return nil, err
	}
	var out apiwire.AgentList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Agents == nil {
		out.Agents = []apiwire.Agent{}
	}
	return out.Agents, nil
}

// Agent returns one agent (GET /api/v1/agents/{name}).
func (c *Client) Agent(ctx context.Context, name string) (*apiwire.Agent, error) {
	u, err := c.endpoint("api", "v1", "agents", name)
	if err != nil {
		return nil, err
	}
	var out apiwire.Agent
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateAgent creates an agent (POST /api/v1/agents). The answer holds
// its token, shown this once: the server keeps only its hash.
func (c *Client) CreateAgent(ctx context.Context, req apiwire.AgentCreateRequest) (*apiwire.Agent, error) {
	u, err := c.endpoint("api", "v1", "agents")
	if err != nil {
		return nil, err
	}
	var out apiwire.Agent
	if err := c.call(ctx, http.MethodPost, u, req, &out, http.StatusCreated, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateAgent changes an agent's services or maximum session lifetime
// (PATCH /api/v1/agents/{name}); the answer lists the sessions the
// change ended.
func (c *Client) UpdateAgent(ctx context.Context, name string, req apiwire.AgentPatchRequest) (*apiwire.Agent, error) {
	u, err := c.endpoint("api", "v1", "agents", name)
	if err != nil {
		return nil, err
	}
	var out apiwire.Agent
	if err := c.call(ctx, http.MethodPatch, u, req, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateAgent gives an agent a new token (POST /api/v1/agents/{name}/rotate);
// the old one stops working at once. The answer holds the new token,
// shown this once.
func (c *Client) RotateAgent(ctx context.Context, name string) (*apiwire.Agent, error) {
	u, err := c.endpoint("api", "v1", "agents", name, "rotate")
	if err != nil {
		return nil, err
	}
	var out apiwire.Agent
	if err := c.call(ctx, http.MethodPost, u, nil, &out, http.StatusOK, http.StatusCreated); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteAgent deletes an agent and ends its sessions
// (DELETE /api/v1/agents/{name}).
func (c *Client) DeleteAgent(ctx context.Context, name string) error {
	u, err := c.endpoint("api", "v1", "agents", name)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodDelete, u, nil, nil, http.StatusNoContent, http.StatusOK)
}
