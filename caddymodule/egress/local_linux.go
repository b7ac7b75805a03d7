//go:build linux

package egress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// routeSeq numbers the route requests, so a reply is matched to its own.
var routeSeq atomic.Uint32

// kernelLocal asks the kernel, as `ip route get <addr>` does (one
// RTM_GETROUTE request over rtnetlink), how it would route a connection
// to addr, and reports whether that route is anything but an ordinary
// route out of the host: local (every interface address, 127.0.0.0/8,
// and any range routed to the host itself, such as an "ip route add
// local 10.9.0.0/16 dev lo" that puts addresses on no interface),
// broadcast, anycast, multicast, or a type it does not know.
//
// A route a dial would fail on is not local: the kernel answers the
// request with the error connect(2) would get, never with a route of
// that type (blackhole: EINVAL, prohibit: EACCES, unreachable:
// EHOSTUNREACH, throw or no route: ENETUNREACH, no IPv6: EAFNOSUPPORT).
// EINVAL is also what a request the kernel does not understand gets:
// it counts only once the same request for the loopback address of the
// family has been answered with a local route (requestUnderstood). Any
// other error, or an answer it cannot read, is returned: callers fail
// closed.
func kernelLocal(addr netip.Addr) (bool, error) {
	local, err := askRoute(addr)
	if err != errBlackhole {
		return local, err
	}
	if !requestUnderstood(addr.Is6()) {
		return false, fmt.Errorf("the kernel would not say how it routes the address: %w (and refuses to route the loopback address too)", syscall.EINVAL)
	}
	return false, nil
}

// understood records, per family (IPv4, IPv6), that the kernel answered
// a route request for the loopback address with a local route.
var understood [2]atomic.Bool

// requestUnderstood reports whether the kernel understands our route
// requests of addr's family, asking it once for 127.0.0.1 or ::1 until
// it has answered that with a local route.
func requestUnderstood(ipv6 bool) bool {
	i, probe := 0, netip.MustParseAddr("127.0.0.1")
	if ipv6 {
		i, probe = 1, netip.IPv6Loopback()
	}
	if understood[i].Load() {
		return true
	}
	if local, err := askRoute(probe); err == nil && local {
		understood[i].Store(true)
		return true
	}
	return false
}

// errBlackhole is routeIsLocal's answer to EINVAL: a blackhole route, or
// a request the kernel does not understand.
var errBlackhole = errors.New("EINVAL: a blackhole route, or a request the kernel does not understand")

// askRoute sends routeRequest for addr and judges the answer
// (routeIsLocal).
func askRoute(addr netip.Addr) (bool, error) {
	family := syscall.AF_INET
	if addr.Is6() {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("asking the kernel for the route: %w", err)
	}
	defer syscall.Close(fd)
	// The kernel answers while handling the send; the timeout only
	// bounds a kernel that does not.
	tv := syscall.NsecToTimeval(int64(time.Second))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return false, fmt.Errorf("asking the kernel for the route: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return false, fmt.Errorf("asking the kernel for the route: %w", err)
	}
	seq := routeSeq.Add(1)
	if err := syscall.Sendto(fd, routeRequest(addr, family, seq), 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return false, fmt.Errorf("asking the kernel for the route: %w", err)
	}
	buf := make([]byte, 4096) // one route, or an error quoting the request
	for {
		n, from, err := syscall.Recvfrom(fd, buf, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("reading the kernel's route: %w", err)
		}
		if nl, ok := from.(*syscall.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue // not from the kernel
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return false, fmt.Errorf("reading the kernel's route: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			return routeIsLocal(m)
		}
	}
}

// routeRequest is an RTM_GETROUTE request for the route to addr.
func routeRequest(addr netip.Addr, family int, seq uint32) []byte {
	ip := addr.AsSlice()
	attrLen := syscall.SizeofRtAttr + len(ip) // 4 or 16 bytes of address: already aligned
	total := syscall.NLMSG_HDRLEN + syscall.SizeofRtMsg + attrLen
	b := make([]byte, total)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint16(b[4:], syscall.RTM_GETROUTE)
	ne.PutUint16(b[6:], syscall.NLM_F_REQUEST)
	ne.PutUint32(b[8:], seq)
	// b[12:16], the port id: 0, the kernel fills it in.
	rt := b[syscall.NLMSG_HDRLEN:]
	rt[0] = byte(family)
	rt[1] = byte(len(ip) * 8) // dst_len: the whole address
	attr := rt[syscall.SizeofRtMsg:]
	ne.PutUint16(attr[0:], uint16(attrLen))
	ne.PutUint16(attr[2:], syscall.RTA_DST)
	copy(attr[syscall.SizeofRtAttr:], ip)
	return b
}

// routeIsLocal judges the kernel's answer to routeRequest.
func routeIsLocal(m syscall.NetlinkMessage) (bool, error) {
	switch m.Header.Type {
	case syscall.NLMSG_ERROR:
		if len(m.Data) < 4 {
			return false, errors.New("reading the kernel's route: short error message")
		}
		errno := syscall.Errno(-int32(binary.NativeEndian.Uint32(m.Data)))
		switch errno {
		case syscall.EINVAL:
			return false, errBlackhole // see kernelLocal
		case syscall.EACCES, // prohibit
			syscall.EHOSTUNREACH, // unreachable
			syscall.ENETUNREACH,  // throw, or no route
			syscall.EAFNOSUPPORT: // no IPv6 at all
			// A dial fails the same way, and cannot reach the host
			// itself either.
			return false, nil
		case 0:
			return false, errors.New("reading the kernel's route: an acknowledgement instead of a route")
		default:
			return false, fmt.Errorf("the kernel would not say how it routes the address: %w", errno)
		}
	case syscall.RTM_NEWROUTE:
		if len(m.Data) < syscall.SizeofRtMsg {
			return false, errors.New("reading the kernel's route: short route message")
		}
		if m.Data[7] == syscall.RTN_UNICAST { // rtmsg.rtm_type
			return false, nil
		}
		// Local, broadcast, anycast, multicast, or a type a route
		// lookup does not give (blackhole and the like come as errors):
		// refused.
		return true, nil
	default:
		return false, fmt.Errorf("reading the kernel's route: unexpected message type %d", m.Header.Type)
	}
}
