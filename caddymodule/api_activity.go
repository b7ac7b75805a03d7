package caddymodule

// The activity log: GET /api/v1/activity (filters, cursor) and the
// live stream GET /api/v1/activity/stream (Server-Sent Events).

import "net/http"

func (a *API) listActivity(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, "not implemented yet")
}

func (a *API) streamActivity(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotImplemented, "not implemented yet")
}
