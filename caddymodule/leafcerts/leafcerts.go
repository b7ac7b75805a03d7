// Package leafcerts mints short-lived TLS leaf certificates for the hosts an
// agent connects to through the MITM proxy.
//
// Leaves are signed by the intermediate of a CA owned by Caddy's PKI app.
// Caddy renews that intermediate in place, so a Minter never holds on to an
// issuer: it asks an IssuerFunc for the current chain on every call and
// treats leaves signed by any other intermediate as stale. The package does
// not import Caddy; callers adapt (*caddypki.CA).IntermediateCertificateChain
// and IntermediateKey into an IssuerFunc.
package leafcerts

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/hostname"
)

const (
	// DefaultLifetime is the leaf validity used when Options.Lifetime is zero.
	DefaultLifetime = 24 * time.Hour
	// DefaultMaxEntries is the cache bound used when Options.MaxEntries is zero.
	DefaultMaxEntries = 10000
	// MinLifetime is the shortest Options.Lifetime New accepts.
	MinLifetime = minValidity

	// clockSkew backdates NotBefore so clients whose clocks run slightly
	// behind ours still accept a leaf minted a moment ago.
	clockSkew = time.Minute
	// minValidity is the shortest validity worth handing out; anything less
	// would expire during a long-lived connection or before renewal kicks in.
	minValidity = time.Minute
	// maxCommonNameLen is the X.520 upper bound for a CommonName; longer
	// names are left out of the Subject (the SAN is what clients check).
	maxCommonNameLen = 64
)

var (
	// ErrInvalidHost is wrapped by every error about a host that cannot be
	// put in a certificate.
	ErrInvalidHost = errors.New("leafcerts: invalid host")
	// ErrIssuerExpiresSoon is wrapped when the issuing certificate expires
	// too soon to sign a leaf with a useful validity period.
	ErrIssuerExpiresSoon = errors.New("leafcerts: issuing CA certificate expires too soon")
	// ErrNoIssuer is wrapped when the IssuerFunc returns no certificate or
	// no key.
	ErrNoIssuer = errors.New("leafcerts: no issuing CA certificate and key available")

	// errMintAborted is what goroutines waiting on an in-flight mint see if
	// the minting goroutine panicked instead of returning.
	errMintAborted = errors.New("leafcerts: certificate minting was aborted")
)

// SNIMismatchError reports a TLS ClientHello whose server name does not
// match the host of the CONNECT request it arrived on. Failing the handshake
// stops an agent from tunnelling to one host while presenting another.
type SNIMismatchError struct {
	SNI    string // server name from the ClientHello, as sent
	Target string // canonical CONNECT target
}

func (e *SNIMismatchError) Error() string {
	return fmt.Sprintf("leafcerts: TLS SNI %q does not match CONNECT target %q", e.SNI, e.Target)
}

// IssuerFunc returns the current issuing chain and its signing key. chain[0]
// is the certificate whose key signs leaves; the rest lead up to, but
// exclude, the root. It is called on every Certificate call, so it must be
// cheap and safe for concurrent use. If chain and key come from separate
// reads and a renewal slips in between, minting fails with an error rather
// than producing a bad leaf.
type IssuerFunc func() (chain []*x509.Certificate, key crypto.Signer)

// Options configures a Minter. The zero value selects the defaults.
type Options struct {
	// Lifetime is the validity of each leaf; zero means DefaultLifetime.
	// It is clamped so a leaf never outlives the issuing certificate.
	Lifetime time.Duration
	// MaxEntries bounds the number of cached leaves; zero means
	// DefaultMaxEntries. When the cache is full, one arbitrary entry is
	// evicted to make room.
	MaxEntries int
	// Now returns the current time; nil means time.Now. Meant for tests.
	Now func() time.Time
}

// Minter mints and caches leaf certificates. It is safe for concurrent use.
//
// A cached leaf is reused only while the issuer's current chain[0] is the
// certificate that signed it and more than a third of its validity is left.
// When a mint observes a new issuer, the whole cache is cleared, because
// every other entry was signed by the old one.
type Minter struct {
	issuer     IssuerFunc
	lifetime   time.Duration
	maxEntries int
	now        func() time.Time

	mu         sync.RWMutex
	entries    map[string]*entry // keyed by canonical host
	inflight   map[string]*call  // mints in progress, keyed by canonical host
	lastIssuer *x509.Certificate // issuer of the most recently stored entry

	hits  atomic.Uint64
	mints atomic.Uint64
}

// entry is a cached leaf together with what decides whether it is reusable.
type entry struct {
	cert    *tls.Certificate
	issuer  *x509.Certificate // chain[0] that signed cert
	renewAt time.Time         // when a third of the validity is left
}

// call is a mint in progress that other goroutines can wait for.
type call struct {
	done  chan struct{} // closed once entry/err are final
	entry *entry
	err   error
}

// issuerState is one consistent read of the IssuerFunc.
type issuerState struct {
	chain []*x509.Certificate
	key   crypto.Signer
}

// New returns a Minter that signs leaves with whatever issuer returns at the
// time of each mint.
func New(issuer IssuerFunc, opts Options) (*Minter, error) {
	if issuer == nil {
		return nil, errors.New("leafcerts: issuer function is required")
	}
	lifetime := opts.Lifetime
	switch {
	case lifetime == 0:
		lifetime = DefaultLifetime
	case lifetime < minValidity:
		return nil, fmt.Errorf("leafcerts: lifetime %s is shorter than the minimum %s", lifetime, minValidity)
	}
	maxEntries := opts.MaxEntries
	switch {
	case maxEntries == 0:
		maxEntries = DefaultMaxEntries
	case maxEntries < 0:
		return nil, fmt.Errorf("leafcerts: max entries must not be negative, got %d", maxEntries)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Minter{
		issuer:     issuer,
		lifetime:   lifetime,
		maxEntries: maxEntries,
		now:        now,
		entries:    make(map[string]*entry),
		inflight:   make(map[string]*call),
	}, nil
}

// Certificate returns a leaf certificate for host, which is a DNS name or an
// IP literal. Names are matched case-insensitively and a trailing dot is
// ignored; IP literals are used in their canonical form (IPv4-mapped IPv6
// addresses become IPv4). Leaves are cached per host, and concurrent calls
// for a host whose leaf is being minted wait for that mint instead of
// starting another.
func (m *Minter) Certificate(host string) (*tls.Certificate, error) {
	// Cache keys are canonical, so a host that is already a key needs no
	// validation: this keeps the hit path to a map read.
	e := m.cached(host)
	if e == nil {
		canonical, _, err := canonicalHost(host)
		if err != nil {
			return nil, err
		}
		host = canonical
		e = m.cached(host)
	}
	iss, err := m.currentIssuer()
	if err != nil {
		return nil, err
	}
	now := m.now()
	if e != nil && e.usable(iss.chain[0], now) {
		m.hits.Add(1)
		return e.cert, nil
	}
	return m.mintOnce(host, iss, now)
}

// GetCertificateFor returns a tls.Config.GetCertificate callback for a
// connection tunnelled to host. It serves host's leaf only if the
// ClientHello's server name equals host (case-insensitively, ignoring a
// trailing dot) or, for IP targets, is empty, because clients send no SNI
// for IP addresses. Any other server name fails the handshake with a
// *SNIMismatchError.
func (m *Minter) GetCertificateFor(host string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	target, isIP, err := canonicalHost(host)
	if err != nil {
		return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, err }
	}
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		sni := ""
		if hello != nil {
			sni = hello.ServerName
		}
		if !sniMatches(sni, target, isIP) {
			return nil, &SNIMismatchError{SNI: sni, Target: target}
		}
		return m.Certificate(target)
	}
}

// Stats reports how many Certificate calls were answered without minting
// (from the cache or by waiting for another caller's mint) and how many
// leaves were minted.
func (m *Minter) Stats() (hits, mints uint64) {
	return m.hits.Load(), m.mints.Load()
}

func sniMatches(sni, target string, isIP bool) bool {
	if sni == "" {
		return isIP
	}
	if n := len(sni); sni[n-1] == '.' {
		sni = sni[:n-1]
	}
	return equalFoldASCII(sni, target)
}

// equalFoldASCII compares case-insensitively without Unicode folding, so
// that no non-ASCII SNI can fold onto an ASCII target.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func (m *Minter) cached(host string) *entry {
	if len(host) > hostname.MaxLen {
		return nil // not a valid key; skip hashing an oversized string
	}
	m.mu.RLock()
	e := m.entries[host]
	m.mu.RUnlock()
	return e
}

func (m *Minter) currentIssuer() (issuerState, error) {
	chain, key := m.issuer()
	if len(chain) == 0 || key == nil {
		return issuerState{}, ErrNoIssuer
	}
	for _, c := range chain {
		if c == nil {
			return issuerState{}, fmt.Errorf("%w: issuing chain contains a nil certificate", ErrNoIssuer)
		}
	}
	return issuerState{chain: chain, key: key}, nil
}

func (e *entry) usable(issuer *x509.Certificate, now time.Time) bool {
	return now.Before(e.renewAt) && sameCertificate(e.issuer, issuer)
}

// sameCertificate compares pointers first because Caddy hands out the same
// *x509.Certificate until it renews.
func sameCertificate(a, b *x509.Certificate) bool {
	return a == b || (a != nil && b != nil && bytes.Equal(a.Raw, b.Raw))
}

// mintOnce mints host's leaf unless another goroutine is already doing so,
// in which case it waits for and shares that result. Failures are returned
// to every waiter but never cached, so the next call tries again.
func (m *Minter) mintOnce(host string, iss issuerState, now time.Time) (*tls.Certificate, error) {
	m.mu.Lock()
	if c, ok := m.inflight[host]; ok {
		m.mu.Unlock()
		<-c.done
		if c.err != nil {
			return nil, c.err
		}
		m.hits.Add(1)
		return c.entry.cert, nil
	}
	// A mint may have finished between our cache read and taking the lock.
	if e := m.entries[host]; e != nil && e.usable(iss.chain[0], now) {
		m.mu.Unlock()
		m.hits.Add(1)
		return e.cert, nil
	}
	c := &call{done: make(chan struct{}), err: errMintAborted}
	m.inflight[host] = c
	m.mu.Unlock()

	// Deferred so that waiters are released even if minting panics.
	defer func() {
		m.mu.Lock()
		delete(m.inflight, host)
		if c.err == nil {
			m.storeLocked(host, c.entry)
		}
		m.mu.Unlock()
		close(c.done)
	}()
	c.entry, c.err = m.mint(host, iss, now)
	if c.err != nil {
		return nil, c.err
	}
	m.mints.Add(1)
	return c.entry.cert, nil
}

func (m *Minter) storeLocked(host string, e *entry) {
	if !sameCertificate(m.lastIssuer, e.issuer) {
		// Everything cached so far was signed by another issuer. A mint
		// that raced a renewal may flip this back once; that only costs a
		// few extra mints.
		clear(m.entries)
		m.lastIssuer = e.issuer
	}
	if _, replacing := m.entries[host]; !replacing && len(m.entries) >= m.maxEntries {
		// Map iteration order is unspecified, which makes this a cheap
		// arbitrary eviction; the evicted host is simply minted again.
		for victim := range m.entries {
			delete(m.entries, victim)
			break
		}
	}
	m.entries[host] = e
}

// mint creates a fresh key and leaf for host, signed by iss.
func (m *Minter) mint(host string, iss issuerState, now time.Time) (*entry, error) {
	parent := iss.chain[0]
	if !parent.BasicConstraintsValid || !parent.IsCA {
		return nil, errors.New("leafcerts: issuing certificate is not a CA certificate")
	}
	if parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("leafcerts: issuing certificate may not sign certificates")
	}
	if now.Before(parent.NotBefore) {
		return nil, fmt.Errorf("leafcerts: issuing CA certificate is not valid until %s", parent.NotBefore.UTC().Format(time.RFC3339))
	}
	notBefore := now.Add(-clockSkew)
	if notBefore.Before(parent.NotBefore) {
		notBefore = parent.NotBefore
	}
	notAfter := now.Add(m.lifetime)
	if notAfter.After(parent.NotAfter) {
		notAfter = parent.NotAfter
	}
	if notAfter.Sub(now) < minValidity {
		return nil, fmt.Errorf("%w (not after %s)", ErrIssuerExpiresSoon, parent.NotAfter.UTC().Format(time.RFC3339))
	}

	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	if len(host) <= maxCommonNameLen {
		template.Subject = pkix.Name{CommonName: host}
	}
	if ip := net.ParseIP(host); ip != nil {
		template.IPAddresses = []net.IP{ip}
	} else {
		template.DNSNames = []string{host}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leafcerts: generating leaf key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, iss.key)
	if err != nil {
		return nil, fmt.Errorf("leafcerts: signing leaf for %q: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("leafcerts: parsing minted leaf: %w", err)
	}

	chainDER := make([][]byte, 0, 1+len(iss.chain))
	chainDER = append(chainDER, der)
	for _, c := range iss.chain {
		chainDER = append(chainDER, c.Raw)
	}
	// Renew once two thirds of the actual (possibly clamped) validity have
	// passed, so clients never see a leaf that is about to expire.
	validity := leaf.NotAfter.Sub(leaf.NotBefore)
	return &entry{
		cert: &tls.Certificate{
			Certificate: chainDER,
			PrivateKey:  key,
			Leaf:        leaf,
		},
		issuer:  parent,
		renewAt: leaf.NotAfter.Add(-validity / 3),
	}, nil
}

// serialLimit is 2^128: serials are random 128-bit positive integers.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

func randomSerial() (*big.Int, error) {
	for {
		serial, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("leafcerts: generating serial number: %w", err)
		}
		if serial.Sign() > 0 {
			return serial, nil
		}
	}
}
