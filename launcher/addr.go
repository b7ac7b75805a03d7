package launcher

import (
	"net"
	"net/url"
	"strings"
	"time"
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

// formatTTL renders d as Go duration text without zero tails ("1h", not
// "1h0m0s"), which reads better in server logs and still parses; "" (the
// server's default) for zero.
func formatTTL(d time.Duration) string {
	if d == 0 {
		return ""
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
