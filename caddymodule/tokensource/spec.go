// Package tokensource turns long-lived inputs (an OAuth 2.0 refresh
// token or client secret, a GitHub App's private key) into the
// short-lived access tokens upstreams take, and caches them.
//
// The inputs are ordinary credentials from any store, named by a Spec;
// the Spec never holds a value. A Source fetches on first use, refreshes
// at 80% of a token's lifetime with one fetch in flight however many
// requests wait, refetches first after the upstream rejected the token
// (MarkStale), and fails closed once a token is past its expiry and no
// new one could be had.
package tokensource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/agentvault/caddy-agent-vault/storebackends"
)

// The kinds of token source.
const (
	// KindOAuth2Refresh is the refresh-token grant (RFC 6749 §6).
	KindOAuth2Refresh = "oauth2_refresh"
	// KindOAuth2ClientCredentials is the client-credentials grant
	// (RFC 6749 §4.4).
	KindOAuth2ClientCredentials = "oauth2_client_credentials"
	// KindGitHubApp is a GitHub App installation access token.
	KindGitHubApp = "github_app"
)

// Client authentication methods of the OAuth kinds (RFC 6749 §2.3.1).
const (
	ClientSecretBasic = "client_secret_basic"
	ClientSecretPost  = "client_secret_post"
)

// DefaultGitHubAPI is the api_url of a github_app source by default.
const DefaultGitHubAPI = "https://api.github.com"

// Spec is a token source as PUT /api/v1/credentials/{NAME} takes it and
// the state database keeps it. Fields that name credentials hold a
// credential's name, never its value. A field another kind uses is an
// error, as is an unknown one.
type Spec struct {
	// Kind is oauth2_refresh, oauth2_client_credentials or github_app.
	// Required.
	Kind string `json:"kind"`

	// TokenURL is the OAuth token endpoint: https, no credentials, no
	// fragment. Required for both OAuth kinds.
	TokenURL string `json:"token_url,omitempty"`
	// ClientID is the OAuth client's id (not a secret). Required for
	// both OAuth kinds.
	ClientID string `json:"client_id,omitempty"`
	// ClientSecret names the credential holding the client secret.
	// Required for oauth2_client_credentials; optional for
	// oauth2_refresh (public clients have none).
	ClientSecret string `json:"client_secret,omitempty"`
	// RefreshToken names the credential holding the refresh token.
	// Required for oauth2_refresh. A rotated refresh token replaces it
	// (see the package caddymodule's README section).
	RefreshToken string `json:"refresh_token,omitempty"`
	// Scopes are sent space-separated as scope; default none (the
	// grant's scopes).
	Scopes []string `json:"scopes,omitempty"`
	// ClientAuth is client_secret_basic (default: HTTP Basic with the
	// form-encoded id and secret) or client_secret_post (both in the
	// form).
	ClientAuth string `json:"client_auth,omitempty"`
	// Audience is sent as audience with oauth2_client_credentials
	// (Auth0 and others need it); default none.
	Audience string `json:"audience,omitempty"`

	// AppID is the GitHub App's id (iss of its JWT). Required for
	// github_app.
	AppID string `json:"app_id,omitempty"`
	// PrivateKey names the credential holding the App's PEM private
	// key (PKCS#1 or PKCS#8 RSA). Required for github_app.
	PrivateKey string `json:"private_key,omitempty"`
	// InstallationID is the installation whose token is minted.
	// Required for github_app.
	InstallationID string `json:"installation_id,omitempty"`
	// APIURL is the GitHub REST API's base URL; default
	// https://api.github.com (GitHub Enterprise Server:
	// https://HOST/api/v3).
	APIURL string `json:"api_url,omitempty"`
	// Repositories narrows the token to these repository names;
	// default all the installation can reach.
	Repositories []string `json:"repositories,omitempty"`
	// Permissions narrows the token's permissions ({"contents":"read"});
	// default the installation's.
	Permissions map[string]string `json:"permissions,omitempty"`
}

// ErrInvalidSpec marks a Spec that does not validate (the API answers
// 400).
var ErrInvalidSpec = errors.New("invalid token source")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// MaxSpecBytes bounds a Spec document.
const MaxSpecBytes = 64 << 10

// kindFields are the JSON fields each kind takes (besides kind).
var kindFields = map[string][]string{
	KindOAuth2Refresh:           {"token_url", "client_id", "client_secret", "refresh_token", "scopes", "client_auth"},
	KindOAuth2ClientCredentials: {"token_url", "client_id", "client_secret", "scopes", "client_auth", "audience"},
	KindGitHubApp:               {"app_id", "private_key", "installation_id", "api_url", "repositories", "permissions"},
}

// ParseSpec decodes one JSON Spec strictly and validates it: field
// names match exactly (encoding/json alone would take TOKEN_URL), a
// field of another kind is an error even when null or "", as are
// unknown fields, trailing data and wrong types.
func ParseSpec(data []byte) (Spec, error) {
	if len(data) > MaxSpecBytes {
		return Spec{}, invalid("over %d bytes", MaxSpecBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var fields map[string]json.RawMessage
	if err := dec.Decode(&fields); err != nil {
		return Spec{}, invalid("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Spec{}, invalid("trailing data after the object")
	}
	if fields == nil {
		return Spec{}, invalid("want a JSON object")
	}
	var kind string
	if raw, ok := fields["kind"]; ok {
		if err := json.Unmarshal(raw, &kind); err != nil {
			return Spec{}, invalid("kind must be a string")
		}
	}
	allowed, known := kindFields[kind]
	for k := range fields {
		switch {
		case k == "kind":
		case !isField(k):
			return Spec{}, invalid("unknown field %q (field names are lower case)", printableName(k))
		case known && !contains(allowed, k):
			return Spec{}, invalid("field %s does not apply to kind %s", k, kind)
		}
	}
	dec = json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return Spec{}, invalid("%v", err)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// isField reports whether k is exactly one of Spec's JSON fields.
func isField(k string) bool {
	for _, fs := range kindFields {
		if contains(fs, k) {
			return true
		}
	}
	return false
}

// printableName is k for an error, cut so that a value pasted as a
// field name is not echoed whole.
func printableName(k string) string {
	if len(k) > 32 || !printable(k) {
		return "…"
	}
	return k
}

// MaxInputName bounds the name of an input credential: names are
// short, a long random string is more likely a pasted secret.
const MaxInputName = 64

// validInput reports whether name may name an input credential:
// storebackends.ValidateName's rule, at most MaxInputName bytes.
func validInput(name string) bool {
	return len(name) <= MaxInputName && storebackends.ValidateName(name) == nil
}

// idRE is an App or installation id: digits (GitHub's are numbers).
var idRE = regexp.MustCompile(`^[0-9]{1,20}$`)

// repoRE is a repository's name without its owner; permRE a GitHub
// permission's name.
var (
	repoRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)
	permRE = regexp.MustCompile(`^[a-z_]{1,64}$`)
)

// Validate checks the fields of the Spec's kind and that no other
// kind's field is set.
func (s Spec) Validate() error {
	allowed, ok := kindFields[s.Kind]
	switch {
	case ok:
	case s.Kind == "":
		return invalid("kind is required (%s, %s or %s)", KindOAuth2Refresh, KindOAuth2ClientCredentials, KindGitHubApp)
	default:
		return invalid("unknown kind %q (want %s, %s or %s)", printableName(s.Kind), KindOAuth2Refresh, KindOAuth2ClientCredentials, KindGitHubApp)
	}
	for field, set := range s.setFields() {
		if set && !contains(allowed, field) {
			return invalid("field %s does not apply to kind %s", field, s.Kind)
		}
	}
	if s.Kind == KindGitHubApp {
		return s.validateGitHub()
	}
	return s.validateOAuth()
}

func (s Spec) setFields() map[string]bool {
	return map[string]bool{
		"token_url": s.TokenURL != "", "client_id": s.ClientID != "", "client_secret": s.ClientSecret != "",
		"refresh_token": s.RefreshToken != "", "scopes": s.Scopes != nil, "client_auth": s.ClientAuth != "",
		"audience": s.Audience != "", "app_id": s.AppID != "", "private_key": s.PrivateKey != "",
		"installation_id": s.InstallationID != "", "api_url": s.APIURL != "", "repositories": s.Repositories != nil,
		"permissions": s.Permissions != nil,
	}
}

func (s Spec) validateOAuth() error {
	if err := checkURL("token_url", s.TokenURL); err != nil {
		return err
	}
	if s.ClientID == "" || len(s.ClientID) > 512 || !printable(s.ClientID) {
		return invalid("client_id is required: printable text, at most 512 bytes")
	}
	if s.Kind == KindOAuth2ClientCredentials && s.ClientSecret == "" {
		return invalid("client_secret (the name of the credential holding it) is required")
	}
	if s.Kind == KindOAuth2Refresh && s.RefreshToken == "" {
		return invalid("refresh_token (the name of the credential holding it) is required")
	}
	for field, name := range map[string]string{"client_secret": s.ClientSecret, "refresh_token": s.RefreshToken} {
		if name != "" && !validInput(name) {
			return invalid("%s must name a credential (letters, digits and '_', at most %d), not hold a value", field, MaxInputName)
		}
	}
	switch s.ClientAuth {
	case "", ClientSecretBasic, ClientSecretPost:
	default:
		return invalid("client_auth %q: want %s or %s", s.ClientAuth, ClientSecretBasic, ClientSecretPost)
	}
	if s.ClientAuth != "" && s.ClientSecret == "" {
		return invalid("client_auth needs client_secret")
	}
	for _, sc := range s.Scopes {
		// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
		if sc == "" || len(sc) > 512 || strings.ContainsAny(sc, " \"\\") || !printable(sc) {
			return invalid("scope %q: want a non-empty scope token without spaces, quotes or backslashes", sc)
		}
	}
	if len(s.Audience) > 2048 || !printable(s.Audience) {
		return invalid("audience: printable text, at most 2048 bytes")
	}
	return nil
}

func (s Spec) validateGitHub() error {
	if !idRE.MatchString(s.AppID) {
		return invalid("app_id is required: the App's numeric id")
	}
	if !idRE.MatchString(s.InstallationID) {
		return invalid("installation_id is required: the installation's numeric id")
	}
	if !validInput(s.PrivateKey) {
		return invalid("private_key must name the credential holding the App's PEM key (at most %d characters), not hold a value", MaxInputName)
	}
	if s.APIURL != "" {
		if err := checkURL("api_url", s.APIURL); err != nil {
			return err
		}
	}
	for _, r := range s.Repositories {
		if !repoRE.MatchString(r) {
			return invalid("repositories: %q is not a repository name (owner not included)", r)
		}
	}
	for k, v := range s.Permissions {
		if !permRE.MatchString(k) || (v != "read" && v != "write" && v != "admin") {
			return invalid("permissions: want {\"name\":\"read|write|admin\"}, got %q: %q", k, v)
		}
	}
	return nil
}

// checkURL accepts an https URL with a host and no credentials, query
// or fragment.
func checkURL(field, raw string) error {
	if raw == "" {
		return invalid("%s is required", field)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || len(raw) > 2048:
		return invalid("%s is not a URL", field)
	case u.Scheme != "https":
		return invalid("%s must be an https URL (the broker never sends a secret in cleartext)", field)
	case u.Hostname() == "" || u.Opaque != "":
		return invalid("%s has no host", field)
	case u.User != nil:
		return invalid("%s must not contain credentials", field)
	case u.Fragment != "" || u.RawQuery != "" || strings.Contains(raw, "#") || strings.Contains(raw, "?"):
		return invalid("%s must have no query or fragment", field)
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Inputs returns the names of the credentials the Spec reads, sorted.
func (s Spec) Inputs() []string {
	var out []string
	for _, n := range []string{s.ClientSecret, s.RefreshToken, s.PrivateKey} {
		if n != "" {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
