package apiclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// AuditQuery filters GET /api/v1/audit; zero fields do not filter.
type AuditQuery struct {
	Actor, Action, Target string
	// Limit is the page size (the server's default 100 when 0, at most 1000).
	Limit int
	// Before is the previous page's NextBefore, or an RFC 3339 time.
	Before string
}

// Audit returns one page of the audit trail, newest first
// (GET /api/v1/audit). Entries is never nil on success.
func (c *Client) Audit(ctx context.Context, q AuditQuery) (*apiwire.AuditList, error) {
	u, err := c.endpoint("api", "v1", "audit")
	if err != nil {
		return nil, err
	}
	v := url.Values{}
	for k, s := range map[string]string{"actor": q.Actor, "action": q.Action, "target": q.Target, "before": q.Before} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	u.RawQuery = v.Encode()
	var out apiwire.AuditList
	if err := c.call(ctx, http.MethodGet, u, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Entries == nil {
		out.Entries = []apiwire.AuditEntry{}
	}
	return &out, nil
}
