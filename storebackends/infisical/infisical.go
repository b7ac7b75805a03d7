// Package infisical fetches credentials from Infisical
// (https://infisical.com, cloud or self-hosted). It implements
// storebackends.Fetcher and storebackends.LoginChecker: it
// authenticates (universal auth or a static access token) and lists the
// secrets of one project environment and folder through the documented
// REST API; the sync engine does the rest.
//
// It talks to Infisical with its own small client on net/http, not
// Infisical's SDK: the client is configured only from Config, so
// HTTPS_PROXY and the like are ignored and the broker's own traffic
// never goes through an agent's proxy; it follows no redirects, caps
// response bodies and never skips TLS verification.
//
// Token lifecycle (universal auth), driven lazily at the start of
// CheckLogin and Fetch: log in; when less than a third of the token's
// lifetime (expiresIn) is left, renew it, or log in again instead when
// a renewal could not grant a full lifetime any more (its
// accessTokenMaxTTL is near) or the renewal fails; when Infisical
// answers 401 to a list, log in again and retry the list once. A
// static token is used as given; a 401 is reported, not retried.
package infisical

import (
	"github.com/agentvault/caddy-agent-vault/storebackends/storehttp"

	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"

	"go.uber.org/zap"
)

// Authentication methods accepted in Config.AuthMethod.
const (
	// AuthUniversal logs in with a machine identity's client ID and
	// client secret (universal auth).
	AuthUniversal = "universal"
	// AuthToken uses an access token (token auth) or a service token
	// as given.
	AuthToken = "token"
)

// DefaultSiteURL is Infisical Cloud (US).
const DefaultSiteURL = "https://app.infisical.com"

const (
	defaultTimeout = 10 * time.Second
	// defaultMaxResponseBytes caps one response body, so that a broken
	// or hostile server cannot exhaust memory.
	defaultMaxResponseBytes = 32 << 20
)

// Config configures a Fetcher. Nothing is read from the environment.
type Config struct {
	// Name is the store's name, used in log messages; optional.
	Name string
	// SiteURL is Infisical's base URL; default DefaultSiteURL. Plain
	// http is accepted only for loopback addresses.
	SiteURL string
	// AuthMethod is AuthUniversal or AuthToken.
	AuthMethod string
	// ClientID and ClientSecret are the machine identity's universal
	// auth credentials, for AuthUniversal.
	ClientID, ClientSecret string
	// Token is the access token for AuthToken.
	Token string
	// ProjectID is the project (workspace) ID. Required.
	ProjectID string
	// Environment is the environment slug, e.g. "prod". Required.
	Environment string
	// SecretPath is the folder to read; default "/".
	SecretPath string
	// Recursive also reads every folder below SecretPath.
	Recursive bool
	// NamePrefix is prepended to every credential name.
	NamePrefix string
	// Timeout bounds each HTTP request; default 10s.
	Timeout time.Duration
	// CACertFile is a PEM file of CA certificates to trust for
	// Infisical's TLS certificate instead of the system roots; optional.
	CACertFile string
	// TLSServerName overrides the name checked in Infisical's
	// certificate (and sent as SNI); optional.
	TLSServerName string
	// Logger receives Debug per fetch and Info on login and renewal.
	// Values, tokens and the client secret are never logged.
	Logger *zap.Logger
	// Now is the clock; default time.Now. Tests inject one.
	Now func() time.Time

	// dialContext replaces the TCP dialer; tests use it to reach a stub
	// through a hostname that is not loopback.
	dialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// maxResponseBytes replaces defaultMaxResponseBytes in tests.
	maxResponseBytes int64
}

// Fetcher reads credentials from Infisical. Its methods are safe for
// concurrent use; calls are serialised because they share the token.
type Fetcher struct {
	cfg       Config
	client    *http.Client
	transport *http.Transport
	log       *zap.Logger
	now       func() time.Time

	mu      sync.Mutex
	closed  bool
	session session
}

// New validates cfg and builds the HTTP client. It does not contact
// Infisical; call CheckLogin for that.
func New(cfg Config) (*Fetcher, error) {
	if err := normalize(&cfg); err != nil {
		return nil, err
	}
	client, transport, err := storehttp.NewClient(storehttp.Options{
		Service:       "infisical",
		Timeout:       cfg.Timeout,
		CACertFile:    cfg.CACertFile,
		TLSServerName: cfg.TLSServerName,
		DialContext:   cfg.dialContext,
	})
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	f := &Fetcher{cfg: cfg, client: client, transport: transport, log: log, now: now}
	if cfg.AuthMethod == AuthToken {
		f.session = session{token: cfg.Token}
	}
	return f, nil
}

// Close releases idle connections and forgets the token. Later calls
// to Fetch or CheckLogin fail. The token is not revoked: it expires
// with its TTL, and Close must not block on the network.
func (f *Fetcher) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.session = session{}
	f.transport.CloseIdleConnections()
}

// errClosed is returned by calls made after Close.
var errClosed = errors.New("infisical fetcher is closed")

// namePrefixRE is what a credential name may start with.
var namePrefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// normalize applies defaults and validates cfg in place.
func normalize(cfg *Config) error {
	if cfg.SiteURL == "" {
		cfg.SiteURL = DefaultSiteURL
	}
	if err := storehttp.ValidateAddress("infisical", "site_url", cfg.SiteURL); err != nil {
		return err
	}
	cfg.SiteURL = strings.TrimSuffix(cfg.SiteURL, "/")

	switch cfg.AuthMethod {
	case AuthUniversal:
		if cfg.ClientID == "" || cfg.ClientSecret == "" {
			return errors.New("infisical: client_id and client_secret are required for universal auth")
		}
		if !isTokenLike(cfg.ClientID) || !isTokenLike(cfg.ClientSecret) {
			return errors.New("infisical: client_id or client_secret contains spaces or non-printable characters")
		}
		if cfg.Token != "" {
			return errors.New("infisical: token is only used with token auth")
		}
	case AuthToken:
		if cfg.Token == "" {
			return errors.New("infisical: token is required for token auth")
		}
		if !isTokenLike(cfg.Token) {
			return errors.New("infisical: token contains spaces or non-printable characters")
		}
		if cfg.ClientID != "" || cfg.ClientSecret != "" {
			return errors.New("infisical: client_id and client_secret are only used with universal auth")
		}
	case "":
		return errors.New(`infisical: auth method is required ("universal" or "token")`)
	default:
		return fmt.Errorf(`infisical: unknown auth method %q (want "universal" or "token")`, cfg.AuthMethod)
	}

	if cfg.ProjectID == "" {
		return errors.New("infisical: project_id is required")
	}
	if cfg.Environment == "" {
		return errors.New("infisical: environment is required (its slug, e.g. prod)")
	}
	if !isPrintable(cfg.ProjectID) || !isPrintable(cfg.Environment) {
		return errors.New("infisical: project_id and environment must not contain spaces or control characters")
	}
	var err error
	if cfg.SecretPath, err = cleanSecretPath(cfg.SecretPath); err != nil {
		return err
	}
	if cfg.NamePrefix != "" && !namePrefixRE.MatchString(cfg.NamePrefix) {
		return fmt.Errorf("infisical: name_prefix %q must be letters, digits and '_', not starting with a digit, at most 64 characters", cfg.NamePrefix)
	}
	switch {
	case cfg.Timeout < 0:
		return fmt.Errorf("infisical: timeout must not be negative, got %s", cfg.Timeout)
	case cfg.Timeout == 0:
		cfg.Timeout = defaultTimeout
	}
	if cfg.maxResponseBytes == 0 {
		cfg.maxResponseBytes = defaultMaxResponseBytes
	}
	if strings.HasPrefix(cfg.SiteURL, "http://") && (cfg.CACertFile != "" || cfg.TLSServerName != "") {
		return errors.New("infisical: ca_cert and tls_server_name need an https site_url")
	}
	return nil
}

// cleanSecretPath makes p an absolute folder path without a trailing
// slash ("/" for the root) and rejects empty, "." and ".." segments and
// control characters, which could select another folder than meant.
func cleanSecretPath(p string) (string, error) {
	if p == "" || p == "/" {
		return "/", nil
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("infisical: secret_path %q must start with /", p)
	}
	p = strings.TrimSuffix(p, "/")
	for seg := range strings.SplitSeq(p[1:], "/") {
		switch {
		case seg == "":
			return "", fmt.Errorf("infisical: secret_path %q has an empty segment", p)
		case seg == "." || seg == "..":
			return "", fmt.Errorf(`infisical: secret_path %q: "." and ".." are not allowed`, p)
		case !isPrintable(seg):
			return "", fmt.Errorf("infisical: secret_path %q contains spaces or control characters", p)
		}
	}
	return p, nil
}

// isTokenLike reports whether s is non-empty printable ASCII without
// spaces, as every Infisical client ID, client secret and token is; it
// catches a stray newline from a file before it reaches a request.
func isTokenLike(s string) bool {
	for _, r := range s {
		if r <= ' ' || r >= unicode.MaxASCII {
			return false
		}
	}
	return s != ""
}

// isPrintable reports whether s has no spaces, control characters or
// invalid UTF-8.
func isPrintable(s string) bool {
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}

func (f *Fetcher) storeField() zap.Field { return zap.String("store", f.cfg.Name) }
