package leafcerts

import (
	"errors"
	"fmt"

	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
)

// canonicalHost validates host by the rules of package hostname, the same
// ones services apply when a service is defined, and returns the form used
// as cache key and in the certificate.
func canonicalHost(host string) (canonical string, isIP bool, err error) {
	canonical, isIP, err = hostname.Canonical(host)
	if err != nil {
		// Keep only the reason: our message quotes the host itself.
		var reason error = err
		var he *hostname.Error
		if errors.As(err, &he) {
			reason = he
		}
		return "", false, fmt.Errorf("%w %s: %w", ErrInvalidHost, hostname.Quote(host), reason)
	}
	return canonical, isIP, nil
}
