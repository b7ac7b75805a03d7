package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Dialer opens upstream TCP connections that the Policy allows. Its
// DialContext fits http.Transport.DialContext. The zero value is usable and
// allows public addresses only.
type Dialer struct {
	// Policy decides which addresses may be dialed; nil means public only.
	Policy *Policy
	// Self holds the broker's own listen addresses, refused whatever
	// Policy allows; nil refuses none (a Listeners that was never Set
	// refuses everything).
	Self *Listeners
	// Resolver resolves upstream host names; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Dialer makes the actual connections (Timeout, KeepAlive, Control...).
	// It only ever receives IP literals, so its own Resolver is never used
	// for the upstream.
	Dialer net.Dialer
}

// lookupNetworks maps the supported dial networks to the address family to
// resolve, so tcp4 and tcp6 only ever see addresses they can dial.
var lookupNetworks = map[string]string{
	"tcp":  "ip",
	"tcp4": "ip4",
	"tcp6": "ip6",
}

// DialContext connects to address ("host:port") over network ("tcp", "tcp4"
// or "tcp6"). A host name is resolved exactly once; every answer is checked
// against the Policy and only then are the checked addresses dialed, in
// order, until one connects. Before the Policy, every answer is checked
// against Self, with the port: the broker never connects to itself.
//
// If any answer is refused the whole dial is refused, even when other answers
// are public: a name that mixes public and private addresses is a classic
// rebinding setup, and dialing only "the good ones" would let an attacker
// probe which internal addresses exist through timing. The refusal is a
// *RefusedError (use errors.As) so callers can tell it from an upstream that
// is merely unreachable.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	lookupNetwork, ok := lookupNetworks[network]
	if !ok {
		return nil, fmt.Errorf("egress: unsupported network %q (want tcp, tcp4 or tcp6)", network)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("egress: invalid upstream address %q: %w", address, err)
	}
	if host == "" {
		// net.Dialer would treat an empty host as the local system.
		return nil, fmt.Errorf("egress: upstream address %q has no host", address)
	}
	// A numeric port only: net.Dialer would look a service name up,
	// and the Self check must judge the port actually dialed.
	portNum, err := strconv.ParseUint(port, 10, 16)
	if err != nil || portNum == 0 {
		return nil, fmt.Errorf("egress: upstream address %q: want a port number from 1 to 65535", address)
	}

	addrs, err := d.resolve(ctx, lookupNetwork, host)
	if err != nil {
		return nil, err
	}
	for _, addr := range addrs {
		checked := normalize(addr)
		// The broker's own listeners first: no allow-list entry opens them.
		if reason := d.Self.refusal(checked, uint16(portNum)); reason != "" {
			return nil, &RefusedError{Host: host, Addr: checked, Port: uint16(portNum), Self: true, Reason: reason}
		}
		if reason := d.Policy.refusal(checked); reason != "" {
			return nil, &RefusedError{Host: host, Addr: checked, Reason: reason}
		}
	}

	var lastErr error
	for _, addr := range addrs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Unmap but keep the zone: a link-local upstream the operator
		// allowed is only reachable through its interface.
		target := net.JoinHostPort(addr.Unmap().String(), port)
		conn, err := d.Dialer.DialContext(ctx, network, target)
		if err == nil {
			return conn, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// resolve returns the addresses host stands for: the literal itself, or the
// answers of a single lookup.
func (d *Dialer) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	resolver := d.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	addrs, err := resolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return nil, fmt.Errorf("egress: resolving upstream %q: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("egress: upstream %q resolved to no addresses", host)
	}
	return addrs, nil
}
