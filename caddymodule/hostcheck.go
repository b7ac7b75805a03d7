package caddymodule

// The management listener answers only to the names it is meant to be
// reached by, which stops DNS rebinding: a web page whose own name
// resolves to 127.0.0.1 cannot make the browser talk to the API as a
// same-origin page of that name.

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
)

// checkHost refuses (421) a request whose Host this server does not
// answer to: allowed are an IP literal (an address cannot be rebound),
// localhost and names under .localhost (browsers resolve them to
// loopback themselves), and the names of allowed_hosts.
func (a *API) checkHost(r *http.Request) error {
	if r.Host == "" {
		return fail(http.StatusMisdirectedRequest, "a request without a Host header is not answered here")
	}
	// The one host parser: the same canonical form (lower case, no
	// trailing dot, IPv6 without brackets) as the allowed names.
	host, _, err := hostname.Normalize(r.Host, 80)
	if err != nil {
		return fail(http.StatusMisdirectedRequest, "this server does not answer to that Host header: %v", err)
	}
	if _, err := netip.ParseAddr(host); err == nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return nil
	}
	if slices.Contains(a.allowedHosts, host) {
		return nil
	}
	return fail(http.StatusMisdirectedRequest, "this server does not answer to the name %s (DNS rebinding protection): add it to the agent_vault_api handler's allowed_hosts", hostname.Quote(host))
}

// canonicalAllowedHosts validates allowed_hosts (each a host name, no
// port, no wildcard, no IP address) and returns their canonical forms,
// which checkHost compares. It does no I/O.
func canonicalAllowedHosts(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, h := range names {
		canon, isIP, err := hostname.Canonical(h)
		if err != nil {
			return nil, fmt.Errorf("allowed_hosts: %v", err)
		}
		if isIP {
			return nil, fmt.Errorf("allowed_hosts: %s is an IP address, which is always allowed: list only host names", hostname.Quote(h))
		}
		out = append(out, canon)
	}
	return out, nil
}

// compileAllowedHosts keeps allowed_hosts' canonical forms for checkHost.
func (a *API) compileAllowedHosts() (err error) {
	a.allowedHosts, err = canonicalAllowedHosts(a.AllowedHosts)
	return err
}
