package egress

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func FuzzParseAllowList(f *testing.F) {
	for _, seed := range []string{
		"",
		"10.0.0.0/8",
		"127.0.0.0/8, ::1/128",
		" 192.168.1.5 ,, fd00::/8 ",
		"::ffff:10.0.0.0/104",
		"::ffff:127.0.0.1",
		"10.1.2.3/8",
		"fe80::1%eth0",
		"0.0.0.0/0,::/0",
		"localhost",
		"1.2.3.4/33",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		policy, err := parseAllowList(input)
		if err != nil {
			if policy != nil {
				t.Fatalf("parseAllowList(%q) returned a policy with error %v", input, err)
			}
			if err.Error() == "" {
				t.Fatalf("parseAllowList(%q) returned an empty error", input)
			}
			return
		}
		_ = policy.String()

		allowed := policy.Allowed()
		names := make([]string, len(allowed))
		for i, prefix := range allowed {
			if !prefix.IsValid() || prefix.Masked() != prefix || prefix.Addr().Is4In6() || prefix.Addr().Zone() != "" {
				t.Fatalf("parseAllowList(%q) kept non-canonical prefix %v", input, prefix)
			}
			// Everything the operator listed is allowed, including the
			// IPv4-mapped form of IPv4 entries.
			for _, addr := range []netip.Addr{prefix.Addr(), lastAddr(prefix)} {
				if err := policy.Check(addr); err != nil {
					t.Fatalf("parseAllowList(%q) refuses %s inside its own entry %s: %v", input, addr, prefix, err)
				}
				if addr.Is4() {
					if err := policy.Check(netip.AddrFrom16(addr.As16())); err != nil {
						t.Fatalf("parseAllowList(%q) refuses mapped %s: %v", input, addr, err)
					}
				}
			}
			names[i] = prefix.String()
		}

		// The canonical form parses back to the same policy.
		again, err := parseAllowList(strings.Join(names, ","))
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", names, input, err)
		}
		if !slices.Equal(again.Allowed(), allowed) {
			t.Fatalf("round trip of %q: got %v, want %v", input, again.Allowed(), allowed)
		}
		if again.String() != policy.String() {
			t.Fatalf("round trip of %q changed String(): %q vs %q", input, again.String(), policy.String())
		}
	})
}

// lastAddr returns the highest address inside p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	addr, _ := netip.AddrFromSlice(b)
	return addr
}
