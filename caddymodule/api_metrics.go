package caddymodule

// GET /metrics: Prometheus text format, for a viewer (or better) or
// the metrics token.

import "net/http"

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, "not implemented yet")
}
