// Package hashicorp fetches credentials from a HashiCorp Vault KV secrets
// engine (version 1 or 2). It implements storebackends.Fetcher and
// storebackends.LoginChecker: it authenticates (token or AppRole) and
// reads every secret under one path; the sync engine does the rest.
//
// The Vault client is configured only from Config: the VAULT_*
// environment variables that github.com/hashicorp/vault/api normally
// reads, and the HTTP(S)_PROXY variables, are ignored, so the broker's
// own Vault traffic never goes through the agent's proxy.
//
// Token lifecycle, driven lazily at the start of CheckLogin and Fetch:
//   - token auth looks the token up once, renews it (renew-self, by its
//     full TTL) when less than a third is left, and logs a warning on
//     every fetch once a token that cannot be renewed (or has reached its
//     max TTL) is within max(24h, a third of its TTL) of expiring;
//   - AppRole logs in, and logs in again when less than a third of the
//     token's lease is left or when Vault answers 403 (then the fetch is
//     retried once). AppRole tokens are not renewed: logging in again is
//     simpler and also recovers from revocation, but it needs a
//     secret_id that allows repeated logins.
package hashicorp

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

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
)

// Authentication methods accepted in Config.AuthMethod.
const (
	AuthToken   = "token"
	AuthAppRole = "approle"
)

// Name mappings accepted in Config.NameMapping.
const (
	// MapKey uses each secret's key as the credential name.
	MapKey = "key"
	// MapPathKey uses "<path relative to Config.Path>/<key>", upper-cased,
	// with every character other than [A-Za-z0-9] replaced by '_'.
	MapPathKey = "path_key"
)

const (
	defaultAuthMount = "approle"
	defaultMount     = "secret"
	defaultTimeout   = 10 * time.Second
)

// Config configures a Fetcher. Nothing is read from the environment.
type Config struct {
	// Name is the store's name, used in log messages; optional.
	Name string
	// Address is Vault's base URL, e.g. https://vault:8200. Plain http
	// is accepted only for loopback addresses (a local dev server).
	Address string
	// Namespace is the Vault Enterprise namespace sent as
	// X-Vault-Namespace on every request; optional.
	Namespace string
	// AuthMethod is AuthToken or AuthAppRole.
	AuthMethod string
	// Token is the Vault token for AuthToken.
	Token string
	// RoleID and SecretID are the AppRole credentials for AuthAppRole.
	RoleID, SecretID string
	// AuthMount is where the AppRole auth method is mounted; default "approle".
	AuthMount string
	// Mount is the KV secrets engine's mount path; default "secret".
	Mount string
	// Path is the folder under Mount that is read recursively; default
	// "" (the whole mount).
	Path string
	// KVVersion is 1 or 2, or 0 to ask Vault on every fetch
	// (GET sys/internal/ui/mounts/<mount>, allowed for limited tokens).
	KVVersion int
	// NamePrefix is prepended to every credential name.
	NamePrefix string
	// NameMapping is MapKey (the default) or MapPathKey.
	NameMapping string
	// Timeout bounds each HTTP request; default 10s.
	Timeout time.Duration
	// CACertFile is a PEM file of CA certificates to trust for Vault's
	// TLS certificate instead of the system roots; optional.
	CACertFile string
	// TLSServerName overrides the name checked in Vault's certificate
	// (and sent as SNI); optional.
	TLSServerName string
	// Logger receives Debug per fetch, Info on login/renewal and Warn
	// when the token is about to expire. Values are never logged.
	Logger *zap.Logger
	// Now is the clock; default time.Now. Tests inject one.
	Now func() time.Time

	// dialContext replaces the TCP dialer; tests use it to reach a stub
	// through a hostname that is not loopback.
	dialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Fetcher reads credentials from Vault. Its methods are safe for
// concurrent use; calls are serialised because they share the token.
type Fetcher struct {
	cfg       Config
	client    *api.Client
	transport *http.Transport
	log       *zap.Logger
	now       func() time.Time

	mu      sync.Mutex
	closed  bool
	session session
}

// New validates cfg and builds the Vault client. It does not contact
// Vault; call CheckLogin for that.
func New(cfg Config) (*Fetcher, error) {
	if err := normalize(&cfg); err != nil {
		return nil, err
	}
	transport, err := storehttp.NewTransport(storehttp.Options{
		Service:       "vault",
		Timeout:       cfg.Timeout,
		CACertFile:    cfg.CACertFile,
		TLSServerName: cfg.TLSServerName,
		DialContext:   cfg.dialContext,
	})
	if err != nil {
		return nil, err
	}
	client, err := api.NewClient(&api.Config{
		Address: cfg.Address,
		HttpClient: &http.Client{
			Transport: storehttp.Guard(transport, "vault", 0),
			Timeout:   cfg.Timeout,
		},
		Timeout:          cfg.Timeout,
		MaxRetries:       0, // the sync engine owns back-off
		DisableRedirects: true,
	})
	if err != nil {
		// vault/api parses VAULT_* variables even when given a full
		// Config and fails on malformed ones; say so.
		return nil, fmt.Errorf("vault client: %v (note: the Vault library rejects malformed VAULT_* environment variables even though they are not used)", err)
	}
	// api.NewClient copies VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS
	// from the environment into the client: replace all of it.
	client.SetHeaders(http.Header{api.RequestHeaderName: {"true"}})
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	client.SetWrappingLookupFunc(func(string, string) string { return "" })
	client.ClearToken()
	if cfg.AuthMethod == AuthToken {
		client.SetToken(cfg.Token)
	}

	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Fetcher{cfg: cfg, client: client, transport: transport, log: log, now: now}, nil
}

// Close releases idle connections and forgets the token. Later calls
// to Fetch or CheckLogin fail. An AppRole token is not revoked: it
// expires with its TTL, and Close must not block on the network.
func (f *Fetcher) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.client.ClearToken()
	f.session = session{}
	f.transport.CloseIdleConnections()
}

// errClosed is returned by calls made after Close.
var errClosed = errors.New("vault fetcher is closed")

// namePrefixRE is what a credential name may start with.
var namePrefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// normalize applies defaults and validates cfg in place.
func normalize(cfg *Config) error {
	if err := storehttp.ValidateAddress("vault", "address", cfg.Address); err != nil {
		return err
	}
	cfg.Address = strings.TrimSuffix(cfg.Address, "/")

	switch cfg.AuthMethod {
	case AuthToken:
		if cfg.Token == "" {
			return errors.New("vault: token is required for auth_method token")
		}
		if !isTokenLike(cfg.Token) {
			return errors.New("vault: token contains spaces or non-printable characters")
		}
		if cfg.RoleID != "" || cfg.SecretID != "" {
			return errors.New("vault: role_id and secret_id are only used with auth_method approle")
		}
	case AuthAppRole:
		if cfg.RoleID == "" || cfg.SecretID == "" {
			return errors.New("vault: role_id and secret_id are required for auth_method approle")
		}
		if !isTokenLike(cfg.RoleID) || !isTokenLike(cfg.SecretID) {
			return errors.New("vault: role_id or secret_id contains spaces or non-printable characters")
		}
		if cfg.Token != "" {
			return errors.New("vault: token is only used with auth_method token")
		}
	case "":
		return errors.New(`vault: auth_method is required ("token" or "approle")`)
	default:
		return fmt.Errorf(`vault: unknown auth_method %q (want "token" or "approle")`, cfg.AuthMethod)
	}

	var err error
	if cfg.AuthMount, err = cleanPath("auth_mount", cfg.AuthMount, defaultAuthMount); err != nil {
		return err
	}
	if cfg.AuthMethod != AuthAppRole && cfg.AuthMount != defaultAuthMount {
		return errors.New("vault: auth_mount is only used with auth_method approle")
	}
	if cfg.Mount, err = cleanPath("mount", cfg.Mount, defaultMount); err != nil {
		return err
	}
	if cfg.Path, err = cleanPath("path", cfg.Path, ""); err != nil {
		return err
	}
	if cfg.Namespace, err = cleanPath("namespace", cfg.Namespace, ""); err != nil {
		return err
	}

	if cfg.KVVersion < 0 || cfg.KVVersion > 2 {
		return fmt.Errorf("vault: kv_version must be 1, 2 or 0 (detect), not %d", cfg.KVVersion)
	}
	if cfg.NamePrefix != "" && !namePrefixRE.MatchString(cfg.NamePrefix) {
		return fmt.Errorf("vault: name_prefix %q must be letters, digits and '_', not starting with a digit, at most 64 characters", cfg.NamePrefix)
	}
	switch cfg.NameMapping {
	case "":
		cfg.NameMapping = MapKey
	case MapKey, MapPathKey:
	default:
		return fmt.Errorf(`vault: unknown name_mapping %q (want "key" or "path_key")`, cfg.NameMapping)
	}
	switch {
	case cfg.Timeout < 0:
		return fmt.Errorf("vault: timeout must not be negative, got %s", cfg.Timeout)
	case cfg.Timeout == 0:
		cfg.Timeout = defaultTimeout
	}
	if strings.HasPrefix(cfg.Address, "http://") && (cfg.CACertFile != "" || cfg.TLSServerName != "") {
		return errors.New("vault: ca_cert_file and tls_server_name need an https address")
	}
	return nil
}

// isTokenLike reports whether s is non-empty printable ASCII without
// spaces, which every Vault token, role ID and secret ID is; it catches
// a stray newline from a file before it reaches an HTTP header.
func isTokenLike(s string) bool {
	for _, r := range s {
		if r <= ' ' || r >= unicode.MaxASCII {
			return false
		}
	}
	return s != ""
}

// cleanPath trims surrounding slashes from a Vault path setting and
// rejects empty, "." or ".." segments and control characters, which
// could make a request land on a different path than configured.
func cleanPath(field, p, def string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return def, nil
	}
	for seg := range strings.SplitSeq(p, "/") {
		if err := checkSegment(seg); err != nil {
			return "", fmt.Errorf("vault: %s %q: %v", field, p, err)
		}
	}
	return p, nil
}

// checkSegment validates one element of a Vault path.
func checkSegment(seg string) error {
	switch seg {
	case "":
		return errors.New("empty path segment")
	case ".", "..":
		return errors.New(`"." and ".." are not allowed`)
	}
	for _, r := range seg {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return errors.New("control or invalid characters are not allowed")
		}
	}
	return nil
}
