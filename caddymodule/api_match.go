package caddymodule

// GET /api/v1/services/match?url=: which service a request to a URL
// would match, and why (the web UI's URL tester).

import "net/http"

func (a *API) matchService(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, "not implemented yet")
}
