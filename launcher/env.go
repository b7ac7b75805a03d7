package launcher

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiclient"
)

// Environment variables the launcher manages in the child. Names are
// case-sensitive on Unix, so both spellings that clients read are listed.
var (
	// proxyVars route the child's HTTP(S) traffic through the session proxy.
	proxyVars = []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"}
	// noProxyVars exempt the management API from the proxy.
	noProxyVars = []string{"NO_PROXY", "no_proxy"}
	// strayProxyVars are removed and not replaced: an inherited ALL_PROXY
	// could send traffic around our proxy.
	strayProxyVars = []string{"ALL_PROXY", "all_proxy"}
	// caBundleVars point clients at the full bundle (system roots + our
	// CA). Each replaces its client's trust store, which is why they get
	// the whole bundle: OpenSSL and Go (SSL_CERT_FILE), Python requests,
	// curl, git, Deno, pip (PIP_CERT, which also beats a pip.conf cert),
	// the AWS CLI and SDKs, Nix, httplib2, cargo, the gcloud CLI, gRPC's
	// C core, and npm (npm_config_cafile: an environment setting beats
	// every npmrc, so a global npmrc's cafile no longer rejects our CA).
	caBundleVars = []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "DENO_CERT",
		"PIP_CERT", "AWS_CA_BUNDLE", "NIX_SSL_CERT_FILE", "HTTPLIB2_CA_CERTS", "CARGO_HTTP_CAINFO",
		"CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", npmCAFileVar}
	// clientProxyVars carry the proxy URL into clients' own settings,
	// which beat the standard variables: an npmrc's proxy or
	// https-proxy, a pip.conf's proxy.
	clientProxyVars = []string{"npm_config_proxy", "npm_config_https_proxy", "PIP_PROXY"}
	// clientNoProxyVars: npm's noproxy setting, which beats NO_PROXY.
	clientNoProxyVars = []string{"npm_config_noproxy"}
	// strayNPMVars are removed and not replaced: npm's ca setting holds
	// certificates inline (cafile, set above, wins over it anyway).
	strayNPMVars = []string{"npm_config_ca"}
	// secretVars must never reach the agent.
	secretVars = []string{"AGENT_VAULT_TOKEN", "AGENT_VAULT_ADMIN_TOKEN", "AGENT_VAULT_MASTER_PASSWORD", "AGENT_VAULT_MASTER_PASSWORD_FILE"}
)

const (
	// nodeCAVar makes Node add our CA to its built-in roots.
	nodeCAVar = "NODE_EXTRA_CA_CERTS"
	// nodeProxyVar makes Node honour the proxy variables: fetch from
	// Node 24.0 and 22.21, the http and https modules from 24.5 and
	// 22.21. Older Node ignores it (and the proxy): see clients.go.
	nodeProxyVar = "NODE_USE_ENV_PROXY"
	// npmCAFileVar is npm's cafile setting.
	npmCAFileVar = "npm_config_cafile"
	// wgetrcVar names the wgetrc wget reads instead of ~/.wgetrc.
	wgetrcVar = "WGETRC"
)

// reservedVars are the names the launcher removes or sets; a placeholder
// may not use one of them.
var reservedVars = slices.Concat(proxyVars, noProxyVars, strayProxyVars, caBundleVars, secretVars,
	clientProxyVars, clientNoProxyVars, strayNPMVars, []string{nodeCAVar, nodeProxyVar, wgetrcVar})

// childSettings is what the launcher puts into the child's environment.
type childSettings struct {
	proxyURL     string // with the session credentials in its userinfo
	noProxy      string
	bundlePath   string
	nodeCAPath   string
	wgetrcPath   string // empty: no WGETRC is set (none was written)
	placeholders map[string]string
	dropNames    []string // every credential name the server knows (the session's credential_names)
}

// childEnv derives the child's environment from parent: every variable the
// launcher manages or a placeholder names is removed (exact, case-sensitive
// names; npm's settings in any case, as npm reads them), then the
// launcher's values are appended.
func childEnv(parent []string, s childSettings) []string {
	drop := make(map[string]bool, len(reservedVars)+len(s.placeholders))
	for _, name := range reservedVars {
		drop[name] = true
	}
	for name := range s.placeholders {
		drop[name] = true
	}
	for _, name := range s.dropNames {
		drop[name] = true
	}
	env := make([]string, 0, len(parent)+len(reservedVars)+len(s.placeholders))
	for _, kv := range parent {
		name := envName(kv)
		// AGENT_VAULT_* configure the broker (data dir, tokens), and
		// VAULT_* / INFISICAL_* are where operators keep the stores' own
		// tokens: the agent has no business knowing any of them.
		if !drop[name] && !hasBrokerPrefix(name) && !isReservedNPMVar(name) {
			env = append(env, kv)
		}
	}
	for _, name := range proxyVars {
		env = append(env, name+"="+s.proxyURL)
	}
	for _, name := range clientProxyVars {
		env = append(env, name+"="+s.proxyURL)
	}
	for _, name := range noProxyVars {
		env = append(env, name+"="+s.noProxy)
	}
	for _, name := range clientNoProxyVars {
		env = append(env, name+"="+s.noProxy)
	}
	env = append(env, nodeProxyVar+"=1")
	for _, name := range caBundleVars {
		env = append(env, name+"="+s.bundlePath)
	}
	env = append(env, nodeCAVar+"="+s.nodeCAPath)
	if s.wgetrcPath != "" {
		env = append(env, wgetrcVar+"="+s.wgetrcPath)
	}
	for _, name := range slices.Sorted(maps.Keys(s.placeholders)) {
		env = append(env, name+"="+s.placeholders[name])
	}
	return env
}

// isReservedNPMVar reports whether name is, in any case, one of the npm
// settings the launcher manages: npm reads npm_config_* names without
// regard to case, so an inherited NPM_CONFIG_CAFILE could otherwise
// compete with ours.
func isReservedNPMVar(name string) bool {
	lower := strings.ToLower(name)
	if !strings.HasPrefix(lower, "npm_config_") {
		return false
	}
	for _, r := range reservedVars {
		if strings.HasPrefix(r, "npm_config_") && lower == r {
			return true
		}
	}
	return false
}

// envName returns the name part of a NAME=value entry. A leading '=' belongs
// to the name (Windows keeps per-drive entries such as "=C:=C:\").
func envName(kv string) string {
	start := 0
	if strings.HasPrefix(kv, "=") {
		start = 1
	}
	if i := strings.IndexByte(kv[start:], '='); i >= 0 {
		return kv[:start+i]
	}
	return kv
}

// lookupEnv returns the last value of name in env, as the C library and
// os/exec do for duplicates.
func lookupEnv(env []string, name string) string {
	value := ""
	for _, kv := range env {
		if envName(kv) == name && len(kv) > len(name) {
			value = kv[len(name)+1:]
		}
	}
	return value
}

// proxyURLWithCredentials parses the session's proxy URL and puts the
// session token in its userinfo (escaped by net/url).
func proxyURLWithCredentials(raw, token string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("server returned an invalid proxy_url")
	}
	if token == "" {
		return "", errors.New("server returned an empty session token")
	}
	u.User = url.UserPassword("av", token)
	return u.String(), nil
}

// checkPlaceholders rejects placeholder names that are not plain environment
// variable names or that would override a variable the launcher manages.
func checkPlaceholders(placeholders map[string]string) error {
	for name, value := range placeholders {
		if !validEnvName(name) {
			return fmt.Errorf("server returned an invalid placeholder name %q", apiclient.Printable(name, 64))
		}
		if slices.Contains(reservedVars, name) || isReservedNPMVar(name) {
			return fmt.Errorf("server returned a placeholder for reserved variable %s", name)
		}
		if strings.IndexByte(value, 0) >= 0 {
			return fmt.Errorf("server returned an invalid placeholder for %s", name)
		}
	}
	return nil
}

// validEnvName reports whether name matches [A-Za-z_][A-Za-z0-9_]*.
func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && '0' <= r && r <= '9':
		default:
			return false
		}
	}
	return true
}

// brokerPrefixes name variables that configure the broker or its
// stores; none reaches the agent.
var brokerPrefixes = []string{"AGENT_VAULT_", "VAULT_", "INFISICAL_"}

func hasBrokerPrefix(name string) bool {
	for _, p := range brokerPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
