package tokensource

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultLifetime is assumed when a token endpoint omits expires_in
// (RFC 6749 §5.1 only recommends it).
const DefaultLifetime = time.Hour

// Fetched is what one call of a token endpoint gave.
type Fetched struct {
	Token  string
	Expiry time.Time
	// RefreshToken is a rotated refresh token (oauth2_refresh), or "".
	RefreshToken string
}

// oauthResponse is RFC 6749 §5.1's successful answer and §5.2's error.
type oauthResponse struct {
	AccessToken  string          `json:"access_token"`
	TokenType    string          `json:"token_type"`
	ExpiresIn    json.RawMessage `json:"expires_in"`
	RefreshToken string          `json:"refresh_token"`
	Error        string          `json:"error"`
}

// fetchOAuth runs the Spec's grant against its token endpoint.
func fetchOAuth(ctx context.Context, env *Env, s Spec, now time.Time) (Fetched, error) {
	form := url.Values{}
	if s.Kind == KindOAuth2Refresh {
		rt, err := env.Lookup(s.RefreshToken)
		if err != nil {
			return Fetched{}, err
		}
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", rt)
	} else {
		form.Set("grant_type", "client_credentials")
		if s.Audience != "" {
			form.Set("audience", s.Audience)
		}
	}
	if len(s.Scopes) > 0 {
		form.Set("scope", strings.Join(s.Scopes, " "))
	}
	var secret string
	if s.ClientSecret != "" {
		v, err := env.Lookup(s.ClientSecret)
		if err != nil {
			return Fetched{}, err
		}
		secret = v
	}
	basic := s.ClientSecret != "" && s.ClientAuth != ClientSecretPost
	if !basic {
		form.Set("client_id", s.ClientID)
		if secret != "" {
			form.Set("client_secret", secret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return Fetched{}, fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		// §2.3.1: the id and secret are form-encoded before Basic.
		req.SetBasicAuth(url.QueryEscape(s.ClientID), url.QueryEscape(secret))
	}
	resp, err := env.Client.Do(req)
	if err != nil {
		return Fetched{}, fmt.Errorf("token endpoint %s: %w", endpoint(s.TokenURL), scrubbedErr(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Fetched{}, fmt.Errorf("token endpoint %s: reading the answer: %w", endpoint(s.TokenURL), err)
	}
	var r oauthResponse
	jsonErr := json.Unmarshal(body, &r)
	if resp.StatusCode != http.StatusOK {
		// Only the error code (a fixed ASCII token, §5.2), never the
		// description: a server may echo what it was sent.
		code := ""
		if jsonErr == nil && safeToken(r.Error) {
			code = ": " + r.Error
		}
		return Fetched{}, fmt.Errorf("token endpoint %s answered HTTP %d%s", endpoint(s.TokenURL), resp.StatusCode, code)
	}
	if jsonErr != nil {
		return Fetched{}, fmt.Errorf("token endpoint %s: the answer is not JSON", endpoint(s.TokenURL))
	}
	if !validToken(r.AccessToken) {
		return Fetched{}, fmt.Errorf("token endpoint %s: the answer has no usable access_token", endpoint(s.TokenURL))
	}
	if r.TokenType != "" && !strings.EqualFold(r.TokenType, "bearer") {
		return Fetched{}, fmt.Errorf("token endpoint %s: token_type %q is not bearer", endpoint(s.TokenURL), clip(r.TokenType))
	}
	life := DefaultLifetime
	if len(r.ExpiresIn) > 0 && string(r.ExpiresIn) != "null" {
		var secs float64
		// Some servers send the number as a string.
		raw := strings.Trim(string(r.ExpiresIn), `"`)
		if _, err := fmt.Sscanf(raw, "%g", &secs); err != nil || secs <= 0 || secs > 366*24*3600 {
			return Fetched{}, fmt.Errorf("token endpoint %s: expires_in %q is not a positive number of seconds", endpoint(s.TokenURL), clip(raw))
		}
		life = time.Duration(secs * float64(time.Second))
	}
	f := Fetched{Token: r.AccessToken, Expiry: now.Add(life)}
	if s.Kind == KindOAuth2Refresh && r.RefreshToken != "" {
		if !validToken(r.RefreshToken) {
			return Fetched{}, fmt.Errorf("token endpoint %s: the rotated refresh_token is not usable", endpoint(s.TokenURL))
		}
		f.RefreshToken = r.RefreshToken
	}
	return f, nil
}

// endpoint is a URL for messages: scheme, host and path.
func endpoint(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// scrubbedErr drops the URL a *url.Error repeats (the endpoint is
// named by the caller) and keeps the cause.
func scrubbedErr(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// validToken accepts what can travel in a header: 1 to 16 KiB of
// visible ASCII.
func validToken(t string) bool {
	if t == "" || len(t) > 16<<10 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= 0x20 || t[i] >= 0x7f {
			return false
		}
	}
	return true
}

// safeToken is an OAuth error code (§5.2: %x20-21 / %x23-5B / %x5D-7E),
// short.
func safeToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
