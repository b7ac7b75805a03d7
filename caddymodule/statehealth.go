package caddymodule

// What the app does when the state turns unhealthy, beyond refusing new
// requests (the proxy's gate, refusal.go): it closes the streams that
// were already open.

import (
	"go.uber.org/zap"
)

// connectionCloser closes every session's open connections without
// ending the sessions (sessions.Registry).
type connectionCloser interface {
	CloseConnections() int
}

// healthGuard closes open connections while the state is unhealthy. The
// proxy checks health per request only, so without it a tunnel, a
// relay, a WebSocket or a long response opened before would go on
// while this broker cannot hear revocations: exactly the moment a
// session revoked on another broker must stop working. Sessions are not
// ended; their agents reconnect and get 503 until health is back.
type healthGuard struct {
	health stateHealth
	conns  connectionCloser
	log    *zap.Logger
	down   bool // as of the last check
}

// check runs once per sweep: while unhealthy, every connection opened
// since the last check is closed too.
func (g *healthGuard) check() {
	err := g.health.Healthy()
	switch {
	case err != nil:
		n := g.conns.CloseConnections()
		if !g.down {
			g.log.Warn("the state is unhealthy: open connections are closed and requests refused until it is back",
				zap.Int("connections_closed", n), zap.String("reason", err.Error()), zap.String("detail", stateDetail(err)))
		}
		g.down = true
	case g.down:
		g.log.Info("the state is healthy again: requests are served")
		g.down = false
	}
}
