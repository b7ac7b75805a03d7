// Package egress keeps the proxy from being used for server-side request
// forgery (SSRF): upstream connections may only reach public internet
// addresses, plus whatever private ranges the operator explicitly allows.
//
// The Dialer resolves a host name once, checks every answer against the
// Policy and then dials exactly the addresses it checked, so a DNS server
// cannot swap in a private address between the check and the connection
// (DNS rebinding).
package egress

import (
	"fmt"
	"net/netip"
	"strings"
)

// AllowOption is the configuration option (the same in the Caddyfile
// and the JSON config of the agent_vault app) through which the operator
// lists non-public networks that upstreams may reach. Refusal messages
// name it so the operator knows how to opt in, whatever the config form.
const AllowOption = "allow_private_networks"

// Policy decides which IP addresses upstream connections may reach: public
// unicast addresses always, special-purpose addresses only when they fall
// inside an operator-allowed prefix. The zero value and a nil *Policy allow
// public addresses only. A Policy is immutable and safe for concurrent use.
type Policy struct {
	allowed []netip.Prefix
}

// ParsePolicy builds a Policy from allow-list entries, each a CIDR
// ("10.0.0.0/8", "::1/128") or a bare IP address (allowed as a single-address
// prefix). Surrounding spaces are trimmed and empty entries skipped. An entry
// that is not a valid CIDR or address, carries an IPv6 zone, or has bits set
// past its prefix length ("10.1.2.3/8", which is ambiguous about what the
// operator meant) is an error naming that entry.
func ParsePolicy(allow []string) (*Policy, error) {
	p := &Policy{}
	for _, entry := range allow {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		prefix, err := parseEntry(entry)
		if err != nil {
			return nil, err
		}
		if !containsPrefix(p.allowed, prefix) {
			p.allowed = append(p.allowed, prefix)
		}
	}
	return p, nil
}

func parseEntry(entry string) (netip.Prefix, error) {
	if strings.Contains(entry, "/") {
		prefix, err := netip.ParsePrefix(entry)
		if err != nil {
			return netip.Prefix{}, invalidEntry(entry)
		}
		if masked := prefix.Masked(); masked != prefix {
			return netip.Prefix{}, fmt.Errorf("egress: allow-list entry %q has address bits set beyond its /%d prefix length; write %s for the whole range or %s for the single address",
				entry, prefix.Bits(), masked, netip.PrefixFrom(prefix.Addr(), prefix.Addr().BitLen()))
		}
		return unmapPrefix(prefix), nil
	}
	addr, err := netip.ParseAddr(entry)
	if err != nil {
		return netip.Prefix{}, invalidEntry(entry)
	}
	if addr.Zone() != "" {
		// Check ignores zones, so honouring one here would silently widen the
		// entry to every interface.
		return netip.Prefix{}, fmt.Errorf("egress: allow-list entry %q has an IPv6 zone, which is not supported", entry)
	}
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

func invalidEntry(entry string) error {
	return fmt.Errorf("egress: invalid allow-list entry %q: want a CIDR such as 10.0.0.0/8 or an IP address such as 10.1.2.3", entry)
}

// unmapPrefix rewrites an IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) as
// the IPv4 prefix it denotes, because Check judges mapped addresses as IPv4.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

func containsPrefix(list []netip.Prefix, p netip.Prefix) bool {
	for _, q := range list {
		if q == p {
			return true
		}
	}
	return false
}

// Allowed returns a copy of the operator-allowed prefixes in canonical form:
// masked, IPv4-mapped entries rewritten as IPv4, duplicates dropped.
func (p *Policy) Allowed() []netip.Prefix {
	if p == nil {
		return nil
	}
	return append([]netip.Prefix(nil), p.allowed...)
}

// String summarises the policy for logs, e.g.
// "public addresses plus 10.0.0.0/8, 127.0.0.0/8".
func (p *Policy) String() string {
	if p == nil || len(p.allowed) == 0 {
		return "public addresses only"
	}
	names := make([]string, len(p.allowed))
	for i, prefix := range p.allowed {
		names[i] = prefix.String()
	}
	return "public addresses plus " + strings.Join(names, ", ")
}

// Check reports whether upstream connections may reach ip. It returns nil if
// they may and a *RefusedError (with an empty Host) if not. IPv4-mapped IPv6
// addresses are judged as the IPv4 address they carry and zones are ignored,
// so neither can be used to dodge a rule.
func (p *Policy) Check(ip netip.Addr) error {
	addr := normalize(ip)
	if reason := p.refusal(addr); reason != "" {
		return &RefusedError{Addr: addr, Reason: reason}
	}
	return nil
}

// normalize is the form in which addresses are judged and reported.
func normalize(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}

// refusal returns why addr (already normalized) is refused, or "" if it is
// allowed.
func (p *Policy) refusal(addr netip.Addr) string {
	if !addr.IsValid() {
		return "an invalid address"
	}
	if p != nil {
		for _, prefix := range p.allowed {
			if prefix.Contains(addr) {
				return ""
			}
		}
	}
	return specialPurpose(addr)
}

// specialRange is an address range that is never a legitimate public upstream.
type specialRange struct {
	prefix netip.Prefix
	reason string // completes "<addr> is ..."; names the category
}

// specialRanges lists non-public ranges, most specific first so that the
// reason names the narrowest category (the metadata address before the rest
// of link-local). It follows the IANA special-purpose registries, refusing
// whole blocks where a block mixes local and global assignments: failing
// closed costs nothing for an HTTP upstream.
var specialRanges = []specialRange{
	// IPv4
	{mustPrefix("0.0.0.0/32"), "the unspecified address"},
	{mustPrefix("0.0.0.0/8"), `a "this network" address (0.0.0.0/8)`},
	{mustPrefix("10.0.0.0/8"), "a private address (RFC 1918)"},
	{mustPrefix("100.100.100.200/32"), "a cloud metadata address (Alibaba Cloud)"},
	{mustPrefix("100.64.0.0/10"), "a carrier-grade NAT address (RFC 6598)"},
	{mustPrefix("127.0.0.0/8"), "a loopback address"},
	{mustPrefix("169.254.169.254/32"), "the cloud metadata address (link-local)"},
	{mustPrefix("169.254.170.2/32"), "a cloud metadata address (AWS ECS task credentials, link-local)"},
	{mustPrefix("169.254.0.0/16"), "a link-local address"},
	{mustPrefix("172.16.0.0/12"), "a private address (RFC 1918)"},
	{mustPrefix("192.0.0.0/24"), "an IETF protocol assignment address (192.0.0.0/24)"},
	{mustPrefix("192.0.2.0/24"), "a documentation address (TEST-NET-1)"},
	{mustPrefix("192.88.99.0/24"), "a deprecated 6to4 relay anycast address"},
	{mustPrefix("192.168.0.0/16"), "a private address (RFC 1918)"},
	{mustPrefix("198.18.0.0/15"), "a benchmarking address (RFC 2544)"},
	{mustPrefix("198.51.100.0/24"), "a documentation address (TEST-NET-2)"},
	{mustPrefix("203.0.113.0/24"), "a documentation address (TEST-NET-3)"},
	{mustPrefix("224.0.0.0/4"), "a multicast address"},
	{mustPrefix("255.255.255.255/32"), "the broadcast address"},
	{mustPrefix("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"},

	// IPv6. IPv4-mapped addresses (::ffff:0:0/96) never get here: they are
	// judged as IPv4.
	{mustPrefix("::/128"), "the unspecified address"},
	{mustPrefix("::1/128"), "a loopback address"},
	{mustPrefix("::/96"), "an IPv4-compatible IPv6 address (deprecated; can embed a private IPv4 address)"},
	{mustPrefix("64:ff9b::/96"), "a NAT64 address (can embed a private IPv4 address)"},
	{mustPrefix("64:ff9b:1::/48"), "a local-use NAT64 address (can embed a private IPv4 address)"},
	{mustPrefix("100::/64"), "a discard-only address (RFC 6666)"},
	{mustPrefix("2001::/32"), "a Teredo tunnel address (can embed a private IPv4 address)"},
	{mustPrefix("2001::/23"), "an IETF protocol assignment address (2001::/23)"},
	{mustPrefix("2001:db8::/32"), "a documentation address (2001:db8::/32)"},
	{mustPrefix("2002::/16"), "a 6to4 address (can embed a private IPv4 address)"},
	{mustPrefix("3fff::/20"), "a documentation address (3fff::/20)"},
	{mustPrefix("fd00:ec2::254/128"), "a cloud metadata address (AWS, unique local)"},
	{mustPrefix("fc00::/7"), "a unique local address (ULA, fc00::/7)"},
	{mustPrefix("fe80::/10"), "a link-local address"},
	{mustPrefix("fec0::/10"), "a deprecated site-local address"},
	{mustPrefix("ff00::/8"), "a multicast address"},
}

// globalUnicastV6 is the only IPv6 block IANA allocates for global unicast;
// anything outside it is reserved and has no business being an upstream.
var globalUnicastV6 = mustPrefix("2000::/3")

func mustPrefix(s string) netip.Prefix {
	return netip.MustParsePrefix(s)
}

// specialPurpose returns why addr is not a public unicast address, or "" if
// it is one.
func specialPurpose(addr netip.Addr) string {
	for _, r := range specialRanges {
		if r.prefix.Contains(addr) {
			return r.reason
		}
	}
	if addr.Is6() && !globalUnicastV6.Contains(addr) {
		return "a reserved IPv6 address (outside 2000::/3)"
	}
	if !addr.IsGlobalUnicast() {
		// Unreachable with the table above; kept so a gap in the table
		// fails closed.
		return "not a global unicast address"
	}
	return ""
}

// RefusedError reports an upstream address the Policy does not allow.
type RefusedError struct {
	// Host is the upstream as the agent named it; empty when the error came
	// from Policy.Check, which sees only the address.
	Host string
	// Addr is the refused address, IPv4-mapped form unwrapped, zone removed.
	Addr netip.Addr
	// Reason names the category of address, e.g. "a private address (RFC 1918)".
	Reason string
	// Self is set when Addr and Port are (or may be) one of the broker's
	// own listeners (Dialer.Self), which no allow-list entry opens.
	Self bool
	// Port is the refused port when Self is set, else 0.
	Port uint16
}

// Error describes the refusal and tells the operator how to allow it. It
// contains only the host name and address, never request data.
func (e *RefusedError) Error() string {
	if e.Self {
		where := netip.AddrPortFrom(e.Addr, e.Port).String()
		const hint = "refused: the proxy never connects to the broker itself"
		if e.Host == "" || e.Host == e.Addr.String() {
			return fmt.Sprintf("upstream address %s is %s; %s", where, e.Reason, hint)
		}
		return fmt.Sprintf("upstream %q resolves to %s, %s; %s", e.Host, where, e.Reason, hint)
	}
	hint := fmt.Sprintf("refused (allow it with %s in the agent_vault app)", AllowOption)
	if e.Host == "" || e.Host == e.Addr.String() {
		return fmt.Sprintf("upstream address %s is %s; %s", e.Addr, e.Reason, hint)
	}
	return fmt.Sprintf("upstream %q resolves to %s, %s; %s", e.Host, e.Addr, e.Reason, hint)
}
