package egress

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// The addresses below are data only: nothing in this file opens a connection.

func TestCheckDefaultPolicy(t *testing.T) {
	tests := []struct {
		addr string
		// reason is a substring the refusal must contain; "" means allowed.
		reason string
	}{
		// Public addresses.
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"93.184.216.34", ""},
		{"2606:4700::1111", ""},
		{"2a00:1450:4001:80b::200e", ""},
		{"::ffff:8.8.8.8", ""},
		{"192.31.196.1", ""}, // AS112 is globally reachable, not special-purpose.

		// IPv4 special-purpose ranges.
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "this network"},
		{"10.0.0.1", "private"},
		{"10.255.255.255", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.254", "private"},
		{"192.168.1.1", "private"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.254", "carrier-grade NAT"},
		{"100.100.100.200", "cloud metadata"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"169.254.169.254", "cloud metadata"},
		{"169.254.170.2", "cloud metadata"},
		{"169.254.1.1", "link-local"},
		{"192.0.0.1", "IETF protocol assignment"},
		{"192.0.2.1", "documentation"},
		{"192.88.99.1", "6to4 relay"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"198.51.100.1", "documentation"},
		{"203.0.113.1", "documentation"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "broadcast"},

		// IPv4-mapped IPv6 is judged as the IPv4 address it carries.
		{"::ffff:10.0.0.1", "private"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"::ffff:0.0.0.0", "unspecified"},

		// IPv6 special-purpose ranges.
		{"::", "unspecified"},
		{"::1", "loopback"},
		{"::10.0.0.1", "IPv4-compatible"},
		{"::8.8.8.8", "IPv4-compatible"},
		{"64:ff9b::a00:1", "NAT64"},
		{"64:ff9b::808:808", "NAT64"},
		{"64:ff9b:1::1", "NAT64"},
		{"100::1", "discard"},
		{"2001::1", "Teredo"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"},
		{"2001:2::1", "IETF protocol assignment"},
		{"2001:db8::1", "documentation"},
		{"2002:a00:1::1", "6to4"},
		{"3fff::1", "documentation"},
		{"fc00::1", "unique local"},
		{"fd12:3456::1", "unique local"},
		{"fd00:ec2::254", "cloud metadata"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"febf::1", "link-local"},
		{"fec0::1", "site-local"},
		{"ff02::1", "multicast"},
		{"ff05::1%eth0", "multicast"},
		{"4000::1", "reserved IPv6"},
		{"5f00::1", "reserved IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.addr)
			err := (*Policy)(nil).Check(ip)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want allowed", tt.addr, err)
				}
				return
			}
			var refused *RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("Check(%s) = %v, want *RefusedError", tt.addr, err)
			}
			if !strings.Contains(refused.Reason, tt.reason) {
				t.Errorf("Check(%s) reason = %q, want it to mention %q", tt.addr, refused.Reason, tt.reason)
			}
			if want := ip.Unmap().WithZone(""); refused.Addr != want {
				t.Errorf("Check(%s) Addr = %s, want %s", tt.addr, refused.Addr, want)
			}
			if refused.Host != "" {
				t.Errorf("Check(%s) Host = %q, want empty", tt.addr, refused.Host)
			}
			// The empty policy must behave exactly like the nil one.
			if err := (&Policy{}).Check(ip); err == nil {
				t.Errorf("zero Policy allowed %s", tt.addr)
			}
		})
	}
}

func TestCheckRefusesInvalidAddress(t *testing.T) {
	var refused *RefusedError
	if err := (&Policy{}).Check(netip.Addr{}); !errors.As(err, &refused) {
		t.Fatalf("Check(zero Addr) = %v, want *RefusedError", err)
	}
}

func TestCheckAllowListOverrides(t *testing.T) {
	policy, err := parseAllowList("127.0.0.0/8, 10.1.0.0/16,fd00::/8, 169.254.169.254, fe80::/10")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr    string
		allowed bool
	}{
		{"127.0.0.1", true},
		{"127.9.9.9", true},
		{"::ffff:127.0.0.1", true}, // mapped form is judged as IPv4
		{"10.1.2.3", true},
		{"10.2.0.1", false}, // rest of 10/8 stays refused
		{"169.254.169.254", true},
		{"169.254.169.253", false},
		{"fd00:ec2::254", true},
		{"fc00::1", false},
		{"fe80::1%eth0", true}, // zone is ignored when matching
		{"::1", false},         // allowing IPv4 loopback does not allow IPv6 loopback
		{"192.168.0.1", false},
		{"8.8.8.8", true}, // public stays allowed
	}
	for _, tt := range tests {
		err := policy.Check(netip.MustParseAddr(tt.addr))
		if got := err == nil; got != tt.allowed {
			t.Errorf("Check(%s) = %v, want allowed=%v", tt.addr, err, tt.allowed)
		}
	}
}

func TestParsePolicyNormalizes(t *testing.T) {
	policy, err := ParsePolicy([]string{
		" 10.0.0.0/8 ",
		"",
		"   ",
		"::1",
		"192.168.1.5",
		"::ffff:172.16.0.0/108",
		"::ffff:100.64.0.1",
		"10.0.0.0/8", // duplicate
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("192.168.1.5/32"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("100.64.0.1/32"),
	}
	if got := policy.Allowed(); !slices.Equal(got, want) {
		t.Errorf("Allowed() = %v, want %v", got, want)
	}
	// Allowed returns a copy the caller cannot use to widen the policy.
	policy.Allowed()[0] = netip.MustParsePrefix("0.0.0.0/0")
	if err := policy.Check(netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Error("mutating Allowed() changed the policy")
	}
}

func TestParsePolicyEmpty(t *testing.T) {
	for _, input := range []string{"", " ", ",", " , ,"} {
		policy, err := parseAllowList(input)
		if err != nil {
			t.Fatalf("parseAllowList(%q) = %v", input, err)
		}
		if got := policy.Allowed(); len(got) != 0 {
			t.Errorf("parseAllowList(%q).Allowed() = %v, want none", input, got)
		}
		if err := policy.Check(netip.MustParseAddr("127.0.0.1")); err == nil {
			t.Errorf("parseAllowList(%q) allowed loopback", input)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		input string
		entry string // must be named in the error
	}{
		{"localhost", "localhost"},
		{"10.0.0.0/8,example.com", "example.com"},
		{"10.0.0.0/33", "10.0.0.0/33"},
		{"::1/129", "::1/129"},
		{"10.0.0.0/-1", "10.0.0.0/-1"},
		{"10.0.0/8", "10.0.0/8"},
		{"10.0.0.0/", "10.0.0.0/"},
		{"/8", "/8"},
		{"10.0.0.0/8/8", "10.0.0.0/8/8"},
		{"10.1.2.3/8", "10.1.2.3/8"}, // host bits set: ambiguous
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"fe80::%eth0/64", "fe80::%eth0/64"},
		{"127.0.0.1:8080", "127.0.0.1:8080"},
		{"010.0.0.1", "010.0.0.1"},
		{"10.0.0.0 /8", "10.0.0.0 /8"},
		{"*", "*"},
	}
	for _, tt := range tests {
		policy, err := parseAllowList(tt.input)
		if err == nil {
			t.Errorf("parseAllowList(%q) = %v, want error", tt.input, policy)
			continue
		}
		if policy != nil {
			t.Errorf("parseAllowList(%q) returned a policy alongside its error", tt.input)
		}
		if !strings.Contains(err.Error(), `"`+tt.entry+`"`) {
			t.Errorf("parseAllowList(%q) error %q does not name entry %q", tt.input, err, tt.entry)
		}
	}
}

func TestParsePolicyHostBitsSuggestsFix(t *testing.T) {
	_, err := parseAllowList("10.1.2.3/8")
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{"10.0.0.0/8", "10.1.2.3/32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not suggest %s", err, want)
		}
	}
}

func TestPolicyString(t *testing.T) {
	tests := []struct {
		input string
		want  string
	}{
		{"", "public addresses only"},
		{"10.0.0.0/8, ::1", "public addresses plus 10.0.0.0/8, ::1/128"},
	}
	for _, tt := range tests {
		policy, err := parseAllowList(tt.input)
		if err != nil {
			t.Fatal(err)
		}
		if got := policy.String(); got != tt.want {
			t.Errorf("parseAllowList(%q).String() = %q, want %q", tt.input, got, tt.want)
		}
	}
	if got := (*Policy)(nil).String(); got != "public addresses only" {
		t.Errorf("nil Policy String() = %q", got)
	}
}

func TestRefusedErrorMessage(t *testing.T) {
	tests := []struct {
		err  RefusedError
		want string
	}{
		{
			RefusedError{Host: "db.internal", Addr: netip.MustParseAddr("10.1.2.3"), Reason: "a private address (RFC 1918)"},
			`upstream "db.internal" resolves to 10.1.2.3, a private address (RFC 1918); refused (allow it with allow_private_networks in the agent_vault app)`,
		},
		{
			RefusedError{Host: "127.0.0.1", Addr: netip.MustParseAddr("127.0.0.1"), Reason: "a loopback address"},
			`upstream address 127.0.0.1 is a loopback address; refused (allow it with allow_private_networks in the agent_vault app)`,
		},
		{
			RefusedError{Addr: netip.MustParseAddr("169.254.169.254"), Reason: "the cloud metadata address (link-local)"},
			`upstream address 169.254.169.254 is the cloud metadata address (link-local); refused (allow it with allow_private_networks in the agent_vault app)`,
		},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() =\n %s\nwant\n %s", got, tt.want)
		}
	}
}

// parseAllowList is ParsePolicy for one comma-separated string, the way
// the app splits each allow_private_networks entry.
func parseAllowList(s string) (*Policy, error) { return ParsePolicy(strings.Split(s, ",")) }
