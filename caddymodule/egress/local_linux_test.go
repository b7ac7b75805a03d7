//go:build linux

package egress

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
)

// The kernel's own answer: every address it routes to the host is
// local, including 127.0.0.5 (on no interface) and broadcast and
// multicast routes; addresses it routes out, or not at all, are not.
func TestKernelLocal(t *testing.T) {
	for _, addr := range localTestAddrs(t) {
		local, err := kernelLocal(addr)
		if err != nil || !local {
			t.Errorf("kernelLocal(%s) = %v, %v; want local", addr, local, err)
		}
	}
	for _, a := range []string{"0.0.0.0", "127.255.255.255", "255.255.255.255", "224.0.0.1"} {
		addr := netip.MustParseAddr(a)
		if local, err := kernelLocal(addr); err != nil || !local {
			t.Errorf("kernelLocal(%s) = %v, %v; want refused as local", addr, local, err)
		}
	}
	ifAddrs, _ := net.InterfaceAddrs()
	for _, a := range []string{"203.0.113.77", "2001:db8::77", "8.8.8.8"} {
		addr := netip.MustParseAddr(a)
		for _, ia := range ifAddrs {
			if ipnet, ok := ia.(*net.IPNet); ok && ipnet.Contains(addr.AsSlice()) {
				t.Skipf("%s is on an interface of this machine (%s)", addr, ipnet)
			}
		}
		if local, err := kernelLocal(addr); err != nil || local {
			t.Errorf("kernelLocal(%s) = %v, %v; want not local", addr, local, err)
		}
	}
}

func TestRouteIsLocalAnswers(t *testing.T) {
	route := func(typ uint8) syscall.NetlinkMessage {
		data := make([]byte, syscall.SizeofRtMsg)
		data[7] = typ
		return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: syscall.RTM_NEWROUTE}, Data: data}
	}
	errMsg := func(errno syscall.Errno) syscall.NetlinkMessage {
		data := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
		return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: syscall.NLMSG_ERROR}, Data: data}
	}
	for _, tc := range []struct {
		name    string
		m       syscall.NetlinkMessage
		local   bool
		wantErr bool
	}{
		{"unicast", route(syscall.RTN_UNICAST), false, false},
		{"unreachable", route(syscall.RTN_UNREACHABLE), false, false},
		{"blackhole", route(syscall.RTN_BLACKHOLE), false, false},
		{"local", route(syscall.RTN_LOCAL), true, false},
		{"broadcast", route(syscall.RTN_BROADCAST), true, false},
		{"anycast", route(syscall.RTN_ANYCAST), true, false},
		{"multicast", route(syscall.RTN_MULTICAST), true, false},
		{"unknown type", route(200), true, false},
		{"no route", errMsg(syscall.ENETUNREACH), false, false},
		{"other error", errMsg(syscall.EPERM), false, true},
		{"ack", errMsg(0), false, true},
		{"short", syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: syscall.RTM_NEWROUTE}, Data: []byte{1}}, false, true},
		{"other message", syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: syscall.RTM_NEWADDR}}, false, true},
	} {
		local, err := routeIsLocal(tc.m)
		if local != tc.local || (err != nil) != tc.wantErr {
			t.Errorf("%s: %v, %v; want local %v, error %v", tc.name, local, err, tc.local, tc.wantErr)
		}
	}
}

// A range the kernel routes to the host without any interface holding
// it (Linux AnyIP: "ip route add local 10.9.0.0/16 dev lo") reaches a
// wildcard listener, and the dialer refuses it. It runs in a network
// namespace of its own, so it needs the privilege to make one, and ip.
func TestDialRefusesLocallyRoutedRange(t *testing.T) {
	ipTool, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("no ip command")
	}
	// Never unlocked: the thread, in its own network namespace, ends
	// with the test. Sockets made on it, and ip run from it, live there.
	runtime.LockOSThread()
	if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"route", "add", "local", "10.9.0.0/16", "dev", "lo"}} {
		if out, err := exec.Command(ipTool, args...).CombinedOutput(); err != nil {
			t.Skipf("ip %v: %v\n%s", args, err, out)
		}
	}
	own := listen(t, "tcp", ":0")
	port := own.Addr().(*net.TCPAddr).Port
	target := net.JoinHostPort("10.9.3.4", strconv.Itoa(port))

	// The address is on no interface, yet a plain dial reaches the
	// listener through it.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && ipnet.Contains(net.IPv4(10, 9, 3, 4)) {
			t.Fatalf("10.9.3.4 is on an interface (%s): the test proves nothing", ipnet)
		}
	}
	conn, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatalf("plain dial to %s: %v", target, err)
	}
	conn.Close()
	acceptOne(t, own).Close()

	var l Listeners
	l.Set([]Listener{{Host: "", FirstPort: uint16(port), LastPort: uint16(port)}})
	d, rec := newTestDialer(t, mustPolicy(t, "10.0.0.0/8"))
	d.Self = &l
	_, err = d.DialContext(context.Background(), "tcp", target)
	if refused := requireRefused(t, err, "10.9.3.4"); !refused.Self || refused.Reason != reasonSelf {
		t.Errorf("%+v, want the broker's own listener", refused)
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("the underlying dialer was called for %v", got)
	}
	assertNoConnection(t, own)
}
