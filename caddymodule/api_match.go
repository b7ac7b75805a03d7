package caddymodule

// GET /api/v1/services/match?url=: which service a request to a URL
// would match, and why (the web UI's URL tester). It asks the
// catalog's own Lookup, over every service, so the answer is the
// proxy's.

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
)

// maxMatchURL bounds the URL tested.
const maxMatchURL = 8 << 10

func (a *API) matchService(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("url")
	if raw == "" {
		writeError(w, http.StatusBadRequest, "url: give the URL to test, such as https://api.github.com/user")
		return
	}
	if len(raw) > maxMatchURL {
		writeError(w, http.StatusBadRequest, "url: too long")
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		writeError(w, http.StatusBadRequest, "url: not an absolute URL (want https://host[:port]/path)")
		return
	}
	var tls bool
	var defaultPort int
	switch u.Scheme {
	case "https":
		tls, defaultPort = true, 443
	case "http":
		defaultPort = 80
	default:
		writeError(w, http.StatusBadRequest, "url: the scheme must be http or https")
		return
	}
	if u.User != nil {
		writeError(w, http.StatusBadRequest, "url: leave userinfo out")
		return
	}
	host, port, err := hostname.Normalize(u.Host, defaultPort)
	if err != nil {
		writeError(w, http.StatusBadRequest, "url: "+err.Error())
		return
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	// The answer echoes the URL without its query (it may hold a key).
	shown := *u
	shown.RawQuery, shown.Fragment, shown.ForceQuery = "", "", false
	out := apiwire.ServiceMatch{URL: shown.String(), Host: host, Port: port, TLS: tls}
	c, ok := a.deps.catalog.Services().Lookup(host, port, tls, path, nil)
	switch {
	case ok:
		name := c.Service.Name
		out.Service = &name
		out.Reason = fmt.Sprintf("service %s (host %s) matches %s port %d path %s", name, c.Service.Host, host, port, path)
		if !tls && !c.Service.AllowCleartext && c.Injects() {
			out.Reason += "; over plain http its credential is not injected (allow_cleartext is off)"
		}
		if _, raw := a.deps.catalog.Services().RawTunnel(host, port, nil); tls && raw {
			out.Reason += "; its tunnels are relayed without interception (intercept: false), so the proxy sees no request in them"
		}
	case a.deps.catalog.Services().AllowsHost(host, port, tls, nil):
		out.Reason = fmt.Sprintf("a service covers %s port %d, but not the path %s", host, port, path)
	default:
		out.Reason = fmt.Sprintf("no service covers %s port %d: the proxy refuses it (add a service for the host)", host, port)
	}
	writeJSON(w, http.StatusOK, out)
}
