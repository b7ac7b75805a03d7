// Package storehttp builds the HTTP clients external stores (Vault,
// Infisical) use to reach their servers: configured explicitly, never
// through a proxy from the environment (the broker's own traffic must
// not pass through an agent's proxy), always verifying TLS, refusing
// redirects and bounding response bodies.
package storehttp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/agentvault/caddy-agent-vault/internal/capread"
)

// DefaultMaxBody caps one response body unless Options say otherwise.
const DefaultMaxBody = 32 << 20

// Options describe a store's connection.
type Options struct {
	// Service names the server in messages: "vault", "infisical".
	Service string
	// Timeout bounds dialing, the TLS handshake and response headers.
	Timeout time.Duration
	// CACertFile is a PEM file of CAs to trust instead of the system
	// roots; optional.
	CACertFile string
	// TLSServerName overrides the name checked in the certificate.
	TLSServerName string
	// MaxBody caps each response body; default DefaultMaxBody.
	MaxBody int64
	// DialContext replaces the TCP dialer (tests reach a stub through a
	// name that is not loopback).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// ValidateAddress accepts https URLs, and http URLs of loopback hosts
// (a local dev server), with no path, credentials, query or fragment.
// field is the option's name in messages ("address", "site_url").
func ValidateAddress(service, field, address string) error {
	if address == "" {
		return fmt.Errorf("%s: %s is required", service, field)
	}
	u, err := url.Parse(address)
	if err != nil {
		return fmt.Errorf("%s: %s %q is not a URL", service, field, address)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%s: %s %q must start with https://", service, field, address)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%s: %s %q has no host", service, field, address)
	case u.User != nil:
		return fmt.Errorf("%s: %s must not contain credentials", service, field)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return fmt.Errorf("%s: %s %q must be scheme://host[:port] only", service, field, address)
	case u.Scheme == "http" && !IsLoopback(u.Hostname()):
		return fmt.Errorf("%s: %s %q uses plain http, which is only allowed for a loopback address; use https", service, field, address)
	}
	return nil
}

// IsLoopback reports whether host is localhost or a loopback IP.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// NewTransport returns the bare transport: no proxy whatever
// HTTPS_PROXY says, TLS 1.2+, verification against the system roots or
// CACertFile. Wrap it with Guard before use.
func NewTransport(o Options) (*http.Transport, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.TLSServerName}
	if o.CACertFile != "" {
		pemBytes, err := os.ReadFile(o.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("%s: ca_cert: %w", o.Service, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("%s: ca_cert %q contains no PEM certificate", o.Service, o.CACertFile)
		}
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                 nil, // never an agent proxy
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   o.Timeout,
		ResponseHeaderTimeout: o.Timeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
	}
	if o.DialContext != nil {
		t.DialContext = o.DialContext
	}
	return t, nil
}

// NewClient returns a client on a guarded NewTransport, and that
// transport (to close idle connections).
func NewClient(o Options) (*http.Client, *http.Transport, error) {
	t, err := NewTransport(o)
	if err != nil {
		return nil, nil, err
	}
	return &http.Client{
		Transport:     Guard(t, o.Service, o.MaxBody),
		Timeout:       o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, t, nil
}

// Guard wraps a transport so that redirects are errors and response
// bodies are capped. A followed redirect would carry the store's token
// to whatever host it names; an unfollowed one reads like an empty
// answer, which could empty the store. So neither happens.
func Guard(base http.RoundTripper, service string, maxBody int64) http.RoundTripper {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	return guarded{base: base, service: service, max: maxBody}
}

type guarded struct {
	base    http.RoundTripper
	service string
	max     int64
}

func (g guarded) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered with a redirect (HTTP %d), which is not followed: point the configured address at the server that answers the API itself", g.service, resp.StatusCode)
	}
	resp.Body = capread.NewReadCloser(resp.Body, g.max, fmt.Errorf("%s %w (over %d bytes)", g.service, ErrResponseTooLarge, g.max))
	return resp, nil
}

// ErrResponseTooLarge is returned when a body exceeds its cap.
var ErrResponseTooLarge = errors.New("response is larger than allowed")

// MaxReasonLen bounds how much of a server's own error text is kept.
const MaxReasonLen = 300

// ClipReason shortens a server's error text for messages. Apply it
// after masking credentials: cutting first could leave the start of an
// echoed secret just before the cut, where no mask matches it.
func ClipReason(s string) string {
	if len(s) > MaxReasonLen {
		return strings.ToValidUTF8(s[:MaxReasonLen], "") + "…"
	}
	return s
}
