package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// Discovered returns one page of the discovered hosts, most recently
// seen first (GET /api/v1/discovered); limit 0 is the server's default
// and before the previous page's NextBefore. Hosts is never nil on
// success.
func (c *Client) Discovered(ctx context.Context, limit int, before string) (*apiwire.DiscoveredList, error) {
	u, err := c.endpoint("api", "v1", "discovered")
	if err != nil {
		return nil, err
	}
	v := url.Values{}
	if before != "" {
		v.Set("before", before)
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	u.RawQuery = v.Encode()
	var out apiwire.DiscoveredList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Hosts == nil {
		out.Hosts = []apiwire.DiscoveredHost{}
	}
	return &out, nil
}
