package launcher

import (
	"net"
	"net/url"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

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

// formatTTL renders d as the API writes durations ("1h", not "1h0m0s");
// "" (the server's default) for zero.
func formatTTL(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return apiwire.FormatDuration(d)
}
