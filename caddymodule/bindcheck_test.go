//go:build unix

package caddymodule

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/sys/unix"
)

// reusePortListener listens on a free loopback port WITH SO_REUSEPORT,
// as another Caddy process does.
func reusePortListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// A port another process holds with SO_REUSEPORT, which Caddy's own
// bind would share silently, is found, under each spelling Caddy
// accepts for it; the message names the address.
func TestListenAddrsHeldWithReusePort(t *testing.T) {
	ln, port := reusePortListener(t)
	for _, addr := range []string{"127.0.0.1:" + port, "tcp/127.0.0.1:" + port, "tcp4/127.0.0.1:" + port, ":" + port, "127.0.0.1:" + port + "-" + port} {
		err := checkListenAddrs([]string{"unix//tmp/nothing.sock", addr})
		var inUse *AddrInUseError
		if !errors.As(err, &inUse) {
			t.Errorf("%s: %v, want an AddrInUseError", addr, err)
			continue
		}
		if addr == "127.0.0.1:"+port {
			if want := "listen address 127.0.0.1:" + port + " is already in use (another agent-vault instance?)"; err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
		}
	}
	ln.Close()
	if err := checkListenAddrs([]string{"127.0.0.1:" + port}); err != nil {
		t.Errorf("after the holder closed: %v", err)
	}
}

// Free ports, port 0 and addresses without a port pass.
func TestListenAddrsFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	if err := checkListenAddrs([]string{"127.0.0.1:" + port, "127.0.0.1:0", "unix//tmp/x.sock", "fd/3", "not an address::"}); err != nil {
		t.Errorf("free addresses refused: %v", err)
	}
}

// An address this process's Caddy already listens on, as during a
// config reload, is ours: skipped, although a plain bind would fail.
func TestListenAddrsOwnListenerSkipped(t *testing.T) {
	// Caddy's pool knows a listener by the address it was asked for, so
	// ask for a free port by number rather than for port 0.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	lnAny, err := na.Listen(context.Background(), 0, net.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer lnAny.(net.Listener).Close()
	if !AddrInUse("tcp", addr) {
		t.Fatal("Caddy's own listener not seen by a plain bind")
	}
	if err := checkListenAddrs([]string{addr}); err != nil {
		t.Errorf("this process's own listener refused: %v", err)
	}
}

// The handlers check the listen addresses of the server they are
// provisioned in, before they look for the app.
func TestHandlersCheckTheirServer(t *testing.T) {
	_, port := reusePortListener(t)
	srv := &caddyhttp.Server{Listen: []string{"127.0.0.1:" + port}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.WithValue(context.Background(), caddyhttp.ServerCtxKey, srv)})
	defer cancel()
	var inUse *AddrInUseError
	if err := (&API{}).Provision(ctx); !errors.As(err, &inUse) {
		t.Errorf("API.Provision = %v, want an AddrInUseError", err)
	}
	if err := (&Proxy{}).Provision(ctx); !errors.As(err, &inUse) {
		t.Errorf("Proxy.Provision = %v, want an AddrInUseError", err)
	}
	instanceChecksOff.Store(true)
	defer instanceChecksOff.Store(false)
	if err := checkServerAddrs(ctx); err != nil {
		t.Errorf("with the checks off: %v", err)
	}
}
