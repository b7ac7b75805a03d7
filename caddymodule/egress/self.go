package egress

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
)

// Listener is one of the broker's own listen addresses (the management
// API, the proxy, anything else the server binds, Caddy's admin
// endpoint).
type Listener struct {
	// Host is the address listened on: an IP address, a host name, or ""
	// (like 0.0.0.0 and ::) for every interface. It only adds an exact
	// entry: every local address on the listener's ports is refused
	// whatever the host (see Listeners).
	Host string
	// FirstPort and LastPort bound the listener's ports, inclusive. A
	// zero FirstPort, or a LastPort below FirstPort, means the port is
	// not known (chosen by the system, or a socket inherited by file
	// descriptor): every local address on every port is then refused.
	FirstPort, LastPort uint16
}

// Listeners is the set of the broker's own listen addresses, which a
// Dialer refuses to connect to whatever its Policy allows: an agent must
// not reach the management API, Caddy's admin endpoint or the proxy
// itself (nested CONNECTs) through the proxy.
//
// The rule is deliberately wider than the exact listen addresses: on
// each listener port, every local address is refused (loopback
// 127.0.0.0/8 and ::1, the unspecified addresses 0.0.0.0 and ::, which
// connect to the local host, every address of a local interface, and,
// on Linux, every address the kernel routes to the host itself, asked
// per dial as `ip route get` does: that also covers ranges routed
// locally without being on any interface, and broadcast, anycast and
// multicast routes; interfaces and routes are looked up at dial time so
// a change is seen). A listener on 0.0.0.0 or :: (or with no host)
// accepts on all of them; one on 127.0.0.1 is still the broker when
// reached as 127.0.0.2 on systems that route the whole loopback block
// to it; and refusing another local service that happens to share a
// port with the broker costs little. Addresses are judged with
// IPv4-mapped forms unwrapped and zones removed; a host name is judged
// by every address it resolves to (Dialer resolves it once and dials
// only the addresses judged).
//
// The zero value knows no listeners yet and refuses every address:
// listeners are known only once Caddy has provisioned its HTTP app, and
// a proxy that serves before then must fail closed. Set installs the
// set; it may be called again (atomically replacing it) and concurrently
// with dials.
type Listeners struct {
	set atomic.Pointer[listenerSet]
	// localAddrs lists the local interface addresses; nil means
	// net.InterfaceAddrs. Set only by tests, before use.
	localAddrs func() ([]net.Addr, error)
	// routedLocal reports whether the kernel routes an address to the
	// host itself; nil means kernelLocal. Set only by tests, before use.
	routedLocal func(netip.Addr) (bool, error)
}

type listenerSet struct {
	exact   map[netip.AddrPort]bool
	ports   []portRange // every local address on these ports is refused
	anyPort bool        // a listener of unknown port: every local address is refused
}

type portRange struct{ first, last uint16 }

// Set replaces the set of listeners.
func (l *Listeners) Set(list []Listener) {
	s := &listenerSet{exact: make(map[netip.AddrPort]bool)}
	for _, ln := range list {
		if ln.FirstPort == 0 || ln.LastPort < ln.FirstPort {
			s.anyPort = true
			continue
		}
		s.ports = append(s.ports, portRange{ln.FirstPort, ln.LastPort})
		if ip, err := netip.ParseAddr(ln.Host); err == nil && ln.FirstPort == ln.LastPort {
			s.exact[netip.AddrPortFrom(normalize(ip), ln.FirstPort)] = true
		}
	}
	l.set.Store(s)
}

// Reasons for refusing one of the broker's own addresses. They complete
// "<addr> is ...".
const (
	reasonSelf    = "the broker's own listener"
	reasonUnknown = "possibly the broker's own listener (its listen addresses are not known yet)"
)

// refusal returns why the broker must not dial addr (normalized) on
// port, or "" if it is not one of its own addresses. A nil *Listeners
// refuses nothing.
func (l *Listeners) refusal(addr netip.Addr, port uint16) string {
	if l == nil {
		return ""
	}
	s := l.set.Load()
	if s == nil {
		return reasonUnknown
	}
	if s.exact[netip.AddrPortFrom(addr, port)] {
		return reasonSelf
	}
	if !s.anyPort && !s.hasPort(port) {
		return ""
	}
	if addr.IsLoopback() || addr.IsUnspecified() {
		return reasonSelf
	}
	local, err := l.isInterfaceAddr(addr)
	if err != nil {
		// Cannot tell: fail closed.
		return fmt.Sprintf("possibly the broker's own listener (listing the local addresses failed: %v)", err)
	}
	if local {
		return reasonSelf
	}
	routed := l.routedLocal
	if routed == nil {
		routed = kernelLocal
	}
	if local, err = routed(addr); err != nil {
		return fmt.Sprintf("possibly the broker's own listener (%v)", err)
	}
	if local {
		return reasonSelf
	}
	return ""
}

func (s *listenerSet) hasPort(port uint16) bool {
	for _, r := range s.ports {
		if r.first <= port && port <= r.last {
			return true
		}
	}
	return false
}

// isInterfaceAddr reports whether addr is an address of a local interface.
func (l *Listeners) isInterfaceAddr(addr netip.Addr) (bool, error) {
	list := l.localAddrs
	if list == nil {
		list = net.InterfaceAddrs
	}
	addrs, err := list()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		default:
			continue
		}
		if local, ok := netip.AddrFromSlice(ip); ok && normalize(local) == addr {
			return true, nil
		}
	}
	return false, nil
}
