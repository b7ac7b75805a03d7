package leafcerts

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

const (
	// maxHostLen is the longest DNS name in text form, without a trailing dot.
	maxHostLen = 253
	// maxLabelLen is the longest single DNS label.
	maxLabelLen = 63
	// maxQuotedHost bounds how much of a rejected host goes into an error.
	maxQuotedHost = 64
)

// canonicalHost validates host and returns the form used as cache key and in
// the certificate: IP literals as netip renders them (IPv4-mapped IPv6
// unmapped), names in lower case without a trailing dot.
func canonicalHost(host string) (canonical string, isIP bool, err error) {
	if host == "" {
		return "", false, fmt.Errorf("%w: empty host", ErrInvalidHost)
	}
	if len(host) > maxHostLen+1 { // +1 allows a trailing dot
		return "", false, fmt.Errorf("%w %s: longer than %d bytes", ErrInvalidHost, quoteHost(host), maxHostLen)
	}
	if addr, perr := netip.ParseAddr(host); perr == nil {
		if addr.Zone() != "" {
			return "", false, fmt.Errorf("%w %s: IPv6 zones are not allowed", ErrInvalidHost, quoteHost(host))
		}
		return addr.Unmap().String(), true, nil
	}
	name := strings.TrimSuffix(host, ".")
	if err := checkDNSName(name); err != nil {
		return "", false, fmt.Errorf("%w %s: %s", ErrInvalidHost, quoteHost(host), err)
	}
	return strings.ToLower(name), false, nil
}

// checkDNSName accepts LDH names, plus '_' which real hostnames do contain.
// Like Go's certificate verifier, it rejects a label starting with '-', since
// no client would accept a leaf for such a name. Wildcards, IDNs in Unicode form and anything with a port, path or space
// are rejected. A name whose last label is all digits is rejected too:
// no TLD is numeric, so it is an IP address in non-canonical form.
func checkDNSName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > maxHostLen {
		return fmt.Errorf("longer than %d bytes", maxHostLen)
	}
	labelStart := 0
	allDigits := true
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			n := i - labelStart
			if n == 0 {
				return errors.New("empty label")
			}
			if n > maxLabelLen {
				return fmt.Errorf("label longer than %d bytes", maxLabelLen)
			}
			if i == len(name) && allDigits {
				return errors.New("looks like a malformed IP address")
			}
			labelStart, allDigits = i+1, true
			continue
		}
		c := name[i]
		switch {
		case '0' <= c && c <= '9':
		case c == '-' && i == labelStart:
			return errors.New("label starts with '-'")
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '-', c == '_':
			allDigits = false
		default:
			return fmt.Errorf("contains %q", c)
		}
	}
	return nil
}

// quoteHost quotes host for an error message, truncating long input.
func quoteHost(host string) string {
	if len(host) > maxQuotedHost {
		return fmt.Sprintf("%q...", host[:maxQuotedHost])
	}
	return fmt.Sprintf("%q", host)
}
