package services

import (
	"errors"
	"fmt"
	"net/netip"
)

// Intercepts reports whether the proxy terminates TLS for the service's
// tunnels (Intercept unset or true), as it must to see and inject
// anything. A service with intercept: false is relayed as raw bytes.
func (s Service) Intercepts() bool { return s.Intercept == nil || *s.Intercept }

// checkIntercept refuses, at definition time, an intercept: false the
// proxy could not honour: whatever needs to see a request (a
// credential, a rule, a path in the host) cannot apply to bytes it
// relays unread, and a host it cannot check the SNI against (an IP
// address, for which clients send none) would open a raw tunnel to
// anything the agent's TLS names.
func checkIntercept(s Service, p HostPattern) error {
	if s.Intercepts() {
		return nil
	}
	if s.Auth.Type != AuthPassthrough {
		return fmt.Errorf(`intercept: false relays raw TLS, which can carry no credential: only auth type "passthrough" may use it, not %q`, s.Auth.Type)
	}
	if p.path != "" {
		return errors.New("intercept: false: the host cannot have a path, the proxy sees no request of a relayed tunnel")
	}
	if _, err := netip.ParseAddr(p.host); err == nil {
		return errors.New("intercept: false needs a host name, not an IP address: a TLS client sends no server name (SNI) for an address, and the proxy relays a tunnel only to the host its SNI names")
	}
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"allow_cleartext", s.AllowCleartext},
		{"allow_upgrades", len(s.AllowUpgrades) > 0},
		{"methods", len(s.Methods) > 0},
		{"paths", len(s.Paths) > 0},
		{"rate_limit", s.RateLimit != ""},
		{"max_request_body", s.MaxRequestBody != ""},
		{"body_substitution", s.BodySubstitution != nil},
	} {
		if f.set {
			return fmt.Errorf("intercept: false: %s cannot apply, the proxy sees no request of a relayed tunnel", f.name)
		}
	}
	return nil
}

// RawTunnel returns the service through which a CONNECT to host and
// port is relayed without interception: the most specific in-scope
// service covering them, when every in-scope service that covers them
// says intercept: false. When one that intercepts covers them too (to
// inject a credential or apply a rule, say api.example.com next to a
// raw *.example.com), interception wins: a raw tunnel would silently
// send that service's requests without their credential and past its
// rules, while an intercepted one still serves the raw service's
// requests as a plain passthrough. host is normalized as by
// [hostname.Normalize]; a nil inScope puts every service in scope.
func (t *Table) RawTunnel(host string, port int, inScope func(name string) bool) (*Compiled, bool) {
	if t == nil || !t.raw {
		return nil, false
	}
	var raw *Compiled
	intercepted := false
	t.find(host, func(c *Compiled) bool {
		if !c.pattern.matchPort(port, true) || inScope != nil && !inScope(c.Service.Name) {
			return false
		}
		if c.Service.Intercepts() {
			intercepted = true
			return true // stops the walk: nothing is relayed raw
		}
		if raw == nil {
			raw = c // visited most specific first
		}
		return false
	})
	return raw, raw != nil && !intercepted
}

func cloneBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}
