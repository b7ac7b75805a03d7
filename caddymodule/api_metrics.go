package caddymodule

// GET /metrics: Prometheus text format, for a viewer (or better) or
// the metrics token.

import (
	"crypto/subtle"
	"net/http"

	"github.com/agentvault/caddy-agent-vault/caddymodule/identity"
)

// metrics serves the metrics to the metrics token's holder, and
// otherwise to whoever allow lets read everything (a viewer or better,
// the admin token); anyone else gets allow's 401 or 403. The metrics
// token is recognised here alone: on any other route it is an unknown
// token.
func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	if a.metricsToken(r) {
		a.serveMetrics(w, r)
		return
	}
	a.allow(identity.ReadAll, a.serveMetrics)(w, r)
}

// metricsToken reports whether r carries the configured metrics token
// as its Bearer token (compared in constant time).
func (a *API) metricsToken(r *http.Request) bool {
	if a.deps.metricsToken == "" {
		return false
	}
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return false
	}
	token, err := identity.ParseBearer(h[0])
	if err != nil {
		return false
	}
	got, want := identity.HashToken(token), identity.HashToken(a.deps.metricsToken)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

func (a *API) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if a.deps.metrics == nil {
		writeError(w, http.StatusServiceUnavailable, "metrics are not set up on this server")
		return
	}
	a.deps.metrics.Handler().ServeHTTP(w, r)
}
