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
	"strings"
	"syscall"
	"testing"

	"github.com/agentvault/caddy-agent-vault/internal/testenv"
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

// What the kernel answers an RTM_GETROUTE with: a route (unicast,
// local, broadcast, multicast) or, for a route a dial would fail on, the
// error the dial would get (see TestKernelLocalUnroutable for the real
// answers).
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
		wantErr string // in the error; "" for none
	}{
		{"unicast", route(syscall.RTN_UNICAST), false, ""},
		{"local", route(syscall.RTN_LOCAL), true, ""},
		{"broadcast", route(syscall.RTN_BROADCAST), true, ""},
		{"anycast", route(syscall.RTN_ANYCAST), true, ""},
		{"multicast", route(syscall.RTN_MULTICAST), true, ""},
		// Never sent for a lookup; should one come, fail closed.
		{"blackhole route", route(syscall.RTN_BLACKHOLE), true, ""},
		{"unknown type", route(200), true, ""},
		{"blackhole", errMsg(syscall.EINVAL), false, errBlackhole.Error()},
		{"prohibit", errMsg(syscall.EACCES), false, ""},
		{"unreachable", errMsg(syscall.EHOSTUNREACH), false, ""},
		{"throw or no route", errMsg(syscall.ENETUNREACH), false, ""},
		{"no IPv6", errMsg(syscall.EAFNOSUPPORT), false, ""},
		{"other error", errMsg(syscall.EPERM), false, "the kernel would not say how it routes the address: " + syscall.EPERM.Error()},
		{"busy", errMsg(syscall.ENOBUFS), false, "would not say"},
		{"ack", errMsg(0), false, "acknowledgement"},
		{"short error", syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: syscall.NLMSG_ERROR}, Data: []byte{1}}, false, "short"},
		{"short", syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: syscall.RTM_NEWROUTE}, Data: []byte{1}}, false, "short"},
		{"other message", syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: syscall.RTM_NEWADDR}}, false, "unexpected"},
	} {
		local, err := routeIsLocal(tc.m)
		if local != tc.local || (err != nil) != (tc.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: %v, %v; want local %v, error %q", tc.name, local, err, tc.local, tc.wantErr)
		}
	}
}

// The kernel's real answers for routes a dial fails on, in a network
// namespace of its own (so it needs the privilege to make one, and ip):
// not local, and no error, for IPv4 and IPv6.
func TestKernelLocalUnroutable(t *testing.T) {
	ipTool := enterNetns(t, true)
	routes := [][]string{
		{"route", "add", "blackhole", "10.1.0.0/16"},
		{"route", "add", "prohibit", "10.2.0.0/16"},
		{"route", "add", "unreachable", "10.3.0.0/16"},
		{"route", "add", "throw", "10.4.0.0/16"},
		{"-6", "route", "add", "blackhole", "2001:db8:1::/48"},
		{"-6", "route", "add", "prohibit", "2001:db8:2::/48"},
		{"-6", "route", "add", "unreachable", "2001:db8:3::/48"},
		{"-6", "route", "add", "throw", "2001:db8:4::/48"},
	}
	for _, args := range routes {
		if out, err := exec.Command(ipTool, args...).CombinedOutput(); err != nil {
			testenv.Unavailable(t, "ip %v: %v\n%s", args, err, out)
		}
	}
	for _, a := range []string{
		"10.1.2.3", "10.2.2.3", "10.3.2.3", "10.4.2.3", "10.5.2.3",
		"2001:db8:1::3", "2001:db8:2::3", "2001:db8:3::3", "2001:db8:4::3", "2001:db8:5::3",
	} {
		if local, err := kernelLocal(netip.MustParseAddr(a)); err != nil || local {
			t.Errorf("kernelLocal(%s) = %v, %v; want not local", a, local, err)
		}
	}
	// The premise: these are errors, not routes, and a dial fails on them.
	for _, a := range []string{"10.1.2.3", "10.2.2.3", "2001:db8:1::3", "2001:db8:2::3"} {
		if conn, err := net.Dial("tcp", net.JoinHostPort(a, "9")); err == nil {
			conn.Close()
			t.Errorf("a dial to %s connected", a)
		}
	}
	// And the namespace still has a local route: the check is not
	// blind there.
	if local, err := kernelLocal(netip.MustParseAddr("127.0.0.5")); err != nil || !local {
		t.Errorf("kernelLocal(127.0.0.5) = %v, %v; want local", local, err)
	}
}

// EINVAL, the blackhole answer, is also what a request the kernel does
// not understand would get: it counts as "not local" only once the
// kernel has answered the same request for the loopback address with a
// local route. Here the loopback interface has not come up yet, so
// nothing is routed locally, the probe fails and the address is
// refused; once it is up, the answer counts.
func TestKernelLocalBlackholeNeedsProbe(t *testing.T) {
	ipTool := enterNetns(t, false)
	for _, args := range [][]string{
		{"route", "add", "blackhole", "10.1.0.0/16"},
		{"-6", "route", "add", "blackhole", "2001:db8:1::/48"},
	} {
		if out, err := exec.Command(ipTool, args...).CombinedOutput(); err != nil {
			testenv.Unavailable(t, "ip %v: %v\n%s", args, err, out)
		}
	}
	forget := func() { understood[0].Store(false); understood[1].Store(false) }
	forget()
	t.Cleanup(forget) // probed in this namespace: ask again outside
	for _, a := range []string{"10.1.2.3", "2001:db8:1::3"} {
		if local, err := kernelLocal(netip.MustParseAddr(a)); err == nil || local || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("lo down: kernelLocal(%s) = %v, %v; want an error", a, local, err)
		}
	}
	if understood[0].Load() || understood[1].Load() {
		t.Fatal("a failed probe was recorded as understood")
	}
	if out, err := exec.Command(ipTool, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v\n%s", err, out)
	}
	for _, a := range []string{"10.1.2.3", "2001:db8:1::3"} {
		if local, err := kernelLocal(netip.MustParseAddr(a)); err != nil || local {
			t.Errorf("lo up: kernelLocal(%s) = %v, %v; want not local", a, local, err)
		}
	}
	if !understood[0].Load() || !understood[1].Load() {
		t.Error("the successful probes were not recorded")
	}
}

// enterNetns moves the test's goroutine, locked to its thread for good
// (the thread ends with the test), into a new network namespace, with
// lo up if loUp, and returns the path of ip. Sockets made on the thread,
// and ip run from it, live there.
func enterNetns(t *testing.T, loUp bool) string {
	t.Helper()
	ipTool, err := exec.LookPath("ip")
	if err != nil {
		testenv.Unavailable(t, "no ip command")
	}
	runtime.LockOSThread()
	if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
		testenv.Unavailable(t, "cannot make a network namespace: %v", err)
	}
	if !loUp {
		return ipTool
	}
	if out, err := exec.Command(ipTool, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		testenv.Unavailable(t, "ip link set lo up: %v\n%s", err, out)
	}
	return ipTool
}

// A range the kernel routes to the host without any interface holding
// it (Linux AnyIP: "ip route add local 10.9.0.0/16 dev lo") reaches a
// wildcard listener, and the dialer refuses it. It runs in a network
// namespace of its own, so it needs the privilege to make one, and ip.
func TestDialRefusesLocallyRoutedRange(t *testing.T) {
	ipTool := enterNetns(t, true)
	if out, err := exec.Command(ipTool, "route", "add", "local", "10.9.0.0/16", "dev", "lo").CombinedOutput(); err != nil {
		testenv.Unavailable(t, "ip route add local: %v\n%s", err, out)
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
