package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeInterfaces makes l see addrs as the local interface addresses,
// and the kernel route nothing else to the host.
func fakeInterfaces(l *Listeners, addrs ...string) {
	l.routedLocal = func(netip.Addr) (bool, error) { return false, nil }
	l.localAddrs = func() ([]net.Addr, error) {
		var out []net.Addr
		for _, a := range addrs {
			prefix := netip.MustParsePrefix(a)
			out = append(out, &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())})
		}
		return out, nil
	}
}

func TestListenersRefusal(t *testing.T) {
	type probe struct {
		addr    string
		port    uint16
		refused bool
	}
	tests := []struct {
		name      string
		listeners []Listener
		probes    []probe
	}{
		{
			name:      "wildcard IPv4",
			listeners: []Listener{{Host: "0.0.0.0", FirstPort: 14322, LastPort: 14322}},
			probes: []probe{
				{"127.0.0.1", 14322, true},
				{"127.0.0.2", 14322, true},
				{"127.255.255.254", 14322, true},
				{"::1", 14322, true},
				{"0.0.0.0", 14322, true},
				{"::", 14322, true},
				{"192.168.7.9", 14322, true}, // a local interface
				{"fe80::1234", 14322, true},  // a local interface, link-local
				{"192.168.7.10", 14322, false},
				{"8.8.8.8", 14322, false},
				{"127.0.0.1", 14323, false}, // another port
				{"127.0.0.1", 443, false},
			},
		},
		{
			name:      "empty host",
			listeners: []Listener{{Host: "", FirstPort: 14321, LastPort: 14321}},
			probes: []probe{
				{"127.0.0.1", 14321, true},
				{"::1", 14321, true},
				{"192.168.7.9", 14321, true},
				{"127.0.0.1", 14322, false},
			},
		},
		{
			name:      "wildcard IPv6",
			listeners: []Listener{{Host: "::", FirstPort: 8443, LastPort: 8443}},
			probes: []probe{
				{"127.0.0.1", 8443, true},
				{"::1", 8443, true},
				{"2001:db8::5", 8443, true},
				{"2001:db8::6", 8443, false},
			},
		},
		{
			name:      "exact loopback",
			listeners: []Listener{{Host: "127.0.0.1", FirstPort: 14321, LastPort: 14321}},
			probes: []probe{
				{"127.0.0.1", 14321, true},
				{"127.0.0.2", 14321, true}, // deliberately wider than the exact address
				{"::1", 14321, true},
				{"0.0.0.0", 14321, true},
				{"127.0.0.1", 14320, false},
				{"127.0.0.1", 14322, false},
				{"8.8.8.8", 14321, false},
			},
		},
		{
			name:      "exact address not among the interfaces",
			listeners: []Listener{{Host: "198.51.100.7", FirstPort: 80, LastPort: 80}},
			probes: []probe{
				{"198.51.100.7", 80, true},
				{"198.51.100.8", 80, false},
				{"198.51.100.7", 81, false},
				{"127.0.0.1", 80, true},
			},
		},
		{
			name:      "IPv4-mapped listen address",
			listeners: []Listener{{Host: "::ffff:198.51.100.7", FirstPort: 80, LastPort: 80}},
			probes:    []probe{{"198.51.100.7", 80, true}},
		},
		{
			name:      "host name",
			listeners: []Listener{{Host: "localhost", FirstPort: 2019, LastPort: 2019}},
			probes: []probe{
				{"127.0.0.1", 2019, true},
				{"::1", 2019, true},
				{"127.0.0.1", 2020, false},
			},
		},
		{
			name:      "port range",
			listeners: []Listener{{Host: "127.0.0.1", FirstPort: 9000, LastPort: 9002}},
			probes: []probe{
				{"127.0.0.1", 8999, false},
				{"127.0.0.1", 9000, true},
				{"127.0.0.1", 9001, true},
				{"127.0.0.1", 9002, true},
				{"127.0.0.1", 9003, false},
			},
		},
		{
			name:      "unknown port refuses every local address",
			listeners: []Listener{{Host: "127.0.0.1"}, {Host: "127.0.0.1", FirstPort: 9, LastPort: 8}},
			probes: []probe{
				{"127.0.0.1", 1, true},
				{"127.0.0.3", 65535, true},
				{"192.168.7.9", 443, true},
				{"8.8.8.8", 443, false},
			},
		},
		{
			name:      "several listeners",
			listeners: []Listener{{Host: "127.0.0.1", FirstPort: 14321, LastPort: 14321}, {Host: "", FirstPort: 14322, LastPort: 14322}},
			probes: []probe{
				{"127.0.0.1", 14321, true},
				{"127.0.0.1", 14322, true},
				{"127.0.0.1", 14323, false},
			},
		},
		{
			name:      "no listeners",
			listeners: nil,
			probes:    []probe{{"127.0.0.1", 14321, false}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l Listeners
			fakeInterfaces(&l, "127.0.0.1/8", "192.168.7.9/24", "fe80::1234/64", "2001:db8::5/64")
			l.Set(tc.listeners)
			for _, p := range tc.probes {
				reason := l.refusal(netip.MustParseAddr(p.addr), p.port)
				if got := reason != ""; got != p.refused {
					t.Errorf("%s port %d: refused = %v (%q), want %v", p.addr, p.port, got, reason, p.refused)
				}
				if p.refused && reason != reasonSelf {
					t.Errorf("%s port %d: reason %q, want %q", p.addr, p.port, reason, reasonSelf)
				}
			}
		})
	}
}

func TestListenersUnsetRefusesEverything(t *testing.T) {
	var l Listeners
	for _, a := range []string{"8.8.8.8", "127.0.0.1", "2001:4860::8888"} {
		if got := l.refusal(netip.MustParseAddr(a), 443); got != reasonUnknown {
			t.Errorf("%s: reason %q, want %q", a, got, reasonUnknown)
		}
	}
	var nilListeners *Listeners
	if got := nilListeners.refusal(netip.MustParseAddr("127.0.0.1"), 443); got != "" {
		t.Errorf("nil *Listeners refused: %q", got)
	}
}

func TestListenersInterfaceErrorFailsClosed(t *testing.T) {
	var l Listeners
	l.localAddrs = func() ([]net.Addr, error) { return nil, errors.New("netlink broke") }
	l.Set([]Listener{{Host: "", FirstPort: 14322, LastPort: 14322}})
	got := l.refusal(netip.MustParseAddr("192.168.7.9"), 14322)
	if !strings.Contains(got, "broker's own listener") || !strings.Contains(got, "netlink broke") {
		t.Errorf("reason %q, want a refusal naming the failure", got)
	}
	// Other ports do not need the interface list.
	if got := l.refusal(netip.MustParseAddr("192.168.7.9"), 14323); got != "" {
		t.Errorf("port 14323 refused: %q", got)
	}
}

func TestListenersRealInterfaces(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface list: %v", err)
	}
	var l Listeners
	l.Set([]Listener{{Host: "0.0.0.0", FirstPort: 14322, LastPort: 14322}})
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipnet.IP)
		ip = normalize(ip)
		if got := l.refusal(ip, 14322); got != reasonSelf {
			t.Errorf("local address %s: reason %q, want %q", ip, got, reasonSelf)
		}
	}
}

// TestListenersConcurrentSet runs Set against dials; run with -race.
func TestListenersConcurrentSet(t *testing.T) {
	var l Listeners
	fakeInterfaces(&l)
	l.Set([]Listener{{Host: "127.0.0.1", FirstPort: 1000, LastPort: 1000}})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if i == 0 {
					l.Set([]Listener{{Host: "127.0.0.1", FirstPort: 1000, LastPort: uint16(1000 + j)}})
					continue
				}
				// Port 1000 is in every set ever installed.
				if l.refusal(netip.MustParseAddr("127.0.0.1"), 1000) != reasonSelf {
					t.Error("port 1000 not refused")
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestDialRefusesOwnListener dials a real listener that is in the
// broker's own set, with loopback allowed by the Policy.
func TestDialRefusesOwnListener(t *testing.T) {
	own := listen(t, "tcp4", "127.0.0.1:0")
	other := listen(t, "tcp4", "127.0.0.1:0")
	ownPort := uint16(own.Addr().(*net.TCPAddr).Port)
	otherPort := other.Addr().(*net.TCPAddr).Port

	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8, ::1/128, 0.0.0.0/8, ::/128"))
	d.Self = new(Listeners)
	d.Self.Set([]Listener{{Host: "", FirstPort: ownPort, LastPort: ownPort}})
	d.Resolver = startFakeDNS(t, "127.0.0.1").resolver()

	for _, host := range []string{"127.0.0.1", "127.0.0.2", "::ffff:127.0.0.1", "0.0.0.0", "::1", "self.test"} {
		_, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(host, itoa(int(ownPort))))
		refused := requireRefused(t, err, host)
		if !refused.Self || refused.Port != ownPort || refused.Reason != reasonSelf {
			t.Errorf("%s: RefusedError %+v, want Self, port %d, reason %q", host, refused, ownPort, reasonSelf)
		}
		msg := err.Error()
		if !strings.Contains(msg, "the broker's own listener") || strings.Contains(msg, AllowOption) {
			t.Errorf("%s: message %q should name the broker's own listener and not suggest %s", host, msg, AllowOption)
		}
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
	assertNoConnection(t, own)

	// Another loopback port is still reachable.
	conn, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", itoa(otherPort)))
	if err != nil {
		t.Fatalf("dial to another loopback port: %v", err)
	}
	conn.Close()
	acceptOne(t, other)
}

func TestDialUnsetListenersRefuses(t *testing.T) {
	ln := listen(t, "tcp4", "127.0.0.1:0")
	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))
	d.Self = new(Listeners)
	_, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	refused := requireRefused(t, err, "127.0.0.1")
	if !refused.Self || refused.Reason != reasonUnknown {
		t.Errorf("RefusedError %+v, want Self with reason %q", refused, reasonUnknown)
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
	assertNoConnection(t, ln)
}

func TestDialRefusesNamedPort(t *testing.T) {
	d, rec := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))
	for _, addr := range []string{"127.0.0.1:http", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1"} {
		if _, err := d.DialContext(context.Background(), "tcp", addr); err == nil || !strings.Contains(err.Error(), "port number") {
			t.Errorf("%s: err %v, want a port number error", addr, err)
		}
	}
	if got := rec.dialed(); len(got) != 0 {
		t.Errorf("underlying dialer was called for %v", got)
	}
}

// An address the kernel routes to the host without it being on an
// interface (Linux "ip route add local 10.9.0.0/16 dev lo") is the
// broker too behind a wildcard listener; a failed route lookup fails
// closed.
func TestListenersRoutedLocal(t *testing.T) {
	anyIP := netip.MustParsePrefix("10.9.0.0/16")
	var l Listeners
	fakeInterfaces(&l, "127.0.0.1/8", "192.168.7.9/24")
	l.routedLocal = func(a netip.Addr) (bool, error) { return anyIP.Contains(a), nil }
	l.Set([]Listener{{Host: "", FirstPort: 14322, LastPort: 14322}})
	for _, p := range []struct {
		addr    string
		port    uint16
		refused bool
	}{
		{"10.9.1.2", 14322, true},
		{"10.9.255.255", 14322, true},
		{"10.10.0.1", 14322, false},
		{"10.9.1.2", 14323, false},
	} {
		reason := l.refusal(netip.MustParseAddr(p.addr), p.port)
		if got := reason != ""; got != p.refused || (got && reason != reasonSelf) {
			t.Errorf("%s port %d: reason %q, want refused %v", p.addr, p.port, reason, p.refused)
		}
	}
	l.routedLocal = func(netip.Addr) (bool, error) { return false, errors.New("rtnetlink broke") }
	if got := l.refusal(netip.MustParseAddr("203.0.113.9"), 14322); !strings.Contains(got, "broker's own listener") || !strings.Contains(got, "rtnetlink broke") {
		t.Errorf("reason %q, want a refusal naming the failure", got)
	}
	if got := l.refusal(netip.MustParseAddr("203.0.113.9"), 443); got != "" {
		t.Errorf("port 443 refused: %q", got)
	}
}

// localTestAddrs are local addresses of this machine a wildcard
// listener accepts on: loopback ones, one on no interface (127.0.0.5
// is routed locally as part of 127.0.0.0/8), and every interface
// address.
func localTestAddrs(t *testing.T) []netip.Addr {
	addrs := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("127.0.0.5"),
		netip.MustParseAddr("127.255.255.254"),
		netip.MustParseAddr("::1"),
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("listing the interface addresses: %v", err)
	}
	for _, a := range ifAddrs {
		if ipnet, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipnet.IP); ok && !slices.Contains(addrs, normalize(ip)) {
				addrs = append(addrs, normalize(ip))
			}
		}
	}
	return addrs
}

// A wildcard listener, really bound: dials to every local address of
// this machine on its port are refused before connecting, as literals
// and under a name that resolves to them, whatever the Policy allows;
// another port on the same addresses is not the broker's.
func TestDialWildcardListenerRefusesLocalAddresses(t *testing.T) {
	for _, listenAddr := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		t.Run(listenAddr, func(t *testing.T) {
			network := "tcp"
			if listenAddr == "0.0.0.0:0" {
				network = "tcp4"
			}
			own := listen(t, network, listenAddr)
			port := uint16(own.Addr().(*net.TCPAddr).Port)
			// What ownListeners makes of these Caddy addresses.
			host, _, _ := net.SplitHostPort(listenAddr)
			var l Listeners
			l.Set([]Listener{{Host: host, FirstPort: port, LastPort: port}})

			for _, addr := range localTestAddrs(t) {
				d, rec := newTestDialer(t, mustPolicy(t, "0.0.0.0/0, ::/0"))
				d.Self = &l
				target := net.JoinHostPort(addr.String(), itoa(int(port)))
				if addr.Is6() && addr.IsLinkLocalUnicast() {
					if zone := linkLocalZone(t, addr); zone != "" {
						target = net.JoinHostPort(addr.String()+"%"+zone, itoa(int(port)))
					}
				}
				_, err := d.DialContext(context.Background(), "tcp", target)
				h, _, _ := net.SplitHostPort(target)
				if refused := requireRefused(t, err, h); !refused.Self || refused.Reason != reasonSelf {
					t.Errorf("%s: %+v, want the broker's own listener", target, refused)
				}
				// Under a name.
				d.Resolver = startFakeDNS(t, addr.String()).resolver()
				_, err = d.DialContext(context.Background(), "tcp", net.JoinHostPort("self.test", itoa(int(port))))
				if refused := requireRefused(t, err, "self.test"); !refused.Self || refused.Addr != addr {
					t.Errorf("self.test -> %s: %+v, want the broker's own listener at %s", addr, refused, addr)
				}
				if got := rec.dialed(); len(got) != 0 {
					t.Errorf("%s: the underlying dialer was called for %v", addr, got)
				}
			}
			assertNoConnection(t, own)

			// The same loopback address on another port is reached.
			other := listen(t, "tcp4", "127.0.0.5:0")
			d, _ := newTestDialer(t, mustPolicy(t, "127.0.0.0/8"))
			d.Self = &l
			conn, err := d.DialContext(context.Background(), "tcp", other.Addr().String())
			if err != nil {
				t.Fatalf("dial to another port: %v", err)
			}
			conn.Close()
			acceptOne(t, other)
		})
	}
}

// linkLocalZone names the interface that holds the link-local addr.
func linkLocalZone(t *testing.T, addr netip.Addr) string {
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipnet, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipnet.IP); ok && normalize(ip) == addr {
					return ifc.Name
				}
			}
		}
	}
	return ""
}
