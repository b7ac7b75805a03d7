package caddymodule

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/agentvault/caddy-agent-vault/caddymodule/egress"
)

// The broker's own listen addresses, which the proxy must never connect
// to (egress.Listeners): with loopback allowed and "unmatched tunnel",
// an agent could otherwise reach the management API, Caddy's admin
// endpoint or the proxy itself through the proxy.
//
// They are discovered in App.Start: Caddy starts apps only once every
// app is provisioned, so the http app's servers, placeholders replaced
// and automatic-HTTPS redirect servers added, are final by then (the
// handlers' own Provision runs in the middle of the http app's and would
// see a half-done server list). Until Start installs them, the proxy's
// dialer refuses every address, so a proxy whose server started first
// fails closed.

// discoverListeners installs the broker's own listen addresses into
// a.self.
func (a *App) discoverListeners() error {
	var servers map[string]*caddyhttp.Server
	httpApp, err := a.ctx.AppIfConfigured("http")
	switch {
	case errors.Is(err, caddy.ErrNotConfigured):
		// No http app, hence no proxy to protect; the admin endpoint
		// is still listed below.
	case err != nil:
		return fmt.Errorf("finding the http app's listen addresses: %v", err)
	default:
		app, ok := httpApp.(*caddyhttp.App)
		if !ok {
			return fmt.Errorf("finding the http app's listen addresses: unexpected app type %T", httpApp)
		}
		servers = app.Servers
	}
	list, err := ownListeners(servers, caddy.DefaultAdminListen)
	if err != nil {
		return err
	}
	a.self.Set(list)
	return nil
}

// ownListeners returns the TCP listen addresses of servers plus Caddy's
// admin endpoint at adminListen.
//
// Caddy's public API does not expose the admin address of the running
// config (Config.Admin is not reachable from a module), so this lists
// caddy.DefaultAdminListen (localhost:2019, or $CADDY_ADMIN), the address
// Caddy uses when the config names none. A TCP admin address set in the
// config itself is not seen: keep the admin endpoint on a unix socket,
// as Caddyfile.example does.
func ownListeners(servers map[string]*caddyhttp.Server, adminListen string) ([]egress.Listener, error) {
	var list []egress.Listener
	add := func(where, addr string) error {
		na, err := caddy.ParseNetworkAddress(addr)
		if err != nil {
			return fmt.Errorf("%s: listen address %q: %v", where, addr, err)
		}
		switch {
		case na.IsUnixNetwork():
			return nil // not reachable by a TCP dial
		case na.IsFdNetwork():
			// An inherited socket: its port is not known here.
			list = append(list, egress.Listener{Host: na.Host})
			return nil
		}
		// UDP (HTTP/3) listeners are listed too: the same port over TCP
		// is almost always the same server.
		l := egress.Listener{Host: na.Host}
		if na.StartPort > 0 && na.StartPort <= na.EndPort && na.EndPort <= 65535 {
			l.FirstPort, l.LastPort = uint16(na.StartPort), uint16(na.EndPort)
		} // else port 0 (chosen by the system) or nonsense: unknown, refuses every local port
		list = append(list, l)
		return nil
	}
	for name, srv := range servers {
		if srv == nil {
			continue
		}
		for _, addr := range srv.Listen {
			if err := add(fmt.Sprintf("http server %q", name), addr); err != nil {
				return nil, err
			}
		}
	}
	if adminListen != "" {
		if err := add("Caddy's admin endpoint", adminListen); err != nil {
			return nil, err
		}
	}
	return list, nil
}
