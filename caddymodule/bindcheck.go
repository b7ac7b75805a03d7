package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The listen-address check: a second broker on the same listen
// addresses must refuse to start.
//
// Why: Caddy sets SO_REUSEPORT on every TCP listener, so binding an
// address another process of the same user already listens on succeeds
// and the kernel spreads new connections over both processes: agents
// would reach one broker or the other at random, with sessions only one
// of them knows. The instance lock cannot see this when the two use
// different data dirs.
//
// The check binds each TCP address once WITHOUT SO_REUSEPORT (Go's
// default, SO_REUSEADDR only, as a plain server binds) and closes it at
// once: any listener on the address, with or without SO_REUSEPORT, makes
// that bind fail with EADDRINUSE, while a port left in TIME_WAIT by a
// previous run does not.
//
// When: it must run before Caddy's http app listens, or it would find
// our own listeners. Caddy starts apps in map order, so App.Start may
// run after the http app's Start has already bound the ports; every
// module is provisioned before any app starts, though. So the check runs
// in the Provision of our handlers (agent_vault_api, agent_vault_proxy):
// the http app provisions them with their server in the context, whose
// listen addresses are final by then (placeholders replaced). It covers
// the servers that host the broker, not other sites of the same config.
//
// A config reload provisions while the old config still listens: an
// address this process already listens on (caddy.ListenerUsage counts
// Caddy's own listeners) is ours and is skipped; a new address is
// checked like at first start.

// AddrInUseError is the refusal of a listen address another process
// holds.
type AddrInUseError struct {
	Addr string // host:port
}

func (e *AddrInUseError) Error() string {
	return fmt.Sprintf("listen address %s is already in use (another agent-vault instance?)", e.Addr)
}

// checkServerAddrs checks the listen addresses of the http server whose
// handler is being provisioned with ctx (see the top of this file). A
// handler provisioned outside an http server has none to check.
func checkServerAddrs(ctx caddy.Context) error {
	if instanceChecksOff.Load() {
		return nil
	}
	srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv == nil {
		return nil
	}
	return checkListenAddrs(srv.Listen)
}

// checkListenAddrs returns an *AddrInUseError for the first TCP address
// of addrs (Caddy network addresses, port ranges expanded) that another
// process listens on. Addresses Caddy cannot parse are left to the http
// app, which reports them; unix sockets and inherited file descriptors
// have no port to share.
func checkListenAddrs(addrs []string) error {
	for _, addr := range addrs {
		na, err := caddy.ParseNetworkAddress(addr)
		if err != nil || !isTCPNetwork(na.Network) {
			continue
		}
		for i := range na.PortRangeSize() {
			one := na.At(i)
			if one.StartPort == 0 {
				continue // the system picks a free port
			}
			hostport := one.JoinHostPort(0)
			if caddy.ListenerUsage(one.Network, hostport) > 0 {
				continue // this process listens there already: a reload
			}
			if AddrInUse(one.Network, hostport) {
				return &AddrInUseError{Addr: hostport}
			}
		}
	}
	return nil
}

func isTCPNetwork(network string) bool {
	return network == "tcp" || network == "tcp4" || network == "tcp6"
}

// AddrInUse tells whether binding network ("tcp", "tcp4", "tcp6") and
// hostport without SO_REUSEPORT fails because something listens there.
// Other failures (no such local address, a privileged port) are not
// "in use": the real listen reports them.
func AddrInUse(network, hostport string) bool {
	var lc net.ListenConfig // no Control: no SO_REUSEPORT
	ln, err := lc.Listen(context.Background(), network, hostport)
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	ln.Close()
	return false
}
