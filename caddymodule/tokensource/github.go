package tokensource

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// JWT timing of a GitHub App (GitHub's documented limits): issued 60 s
// in the past against clock drift, expiring at most 10 minutes later.
const (
	jwtBackdate = 60 * time.Second
	jwtLifetime = 10 * time.Minute
)

// AppJWT signs the RS256 JWT a GitHub App authenticates with: iat is
// now minus 60 s, exp is iat plus 10 minutes, iss is the App id.
func AppJWT(key *rsa.PrivateKey, appID string, now time.Time) (string, error) {
	iat := now.Add(-jwtBackdate).Unix()
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	claims, err := json.Marshal(struct {
		IAT int64  `json:"iat"`
		EXP int64  `json:"exp"`
		ISS string `json:"iss"`
	}{iat, iat + int64(jwtLifetime/time.Second), appID})
	if err != nil {
		return "", err
	}
	signing := header + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("signing the App JWT: %w", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ParsePrivateKey reads an RSA private key, PKCS#1 (what GitHub hands
// out) or PKCS#8, as PEM, as PEM with its line breaks written as the
// two characters \n, or base64 of either PEM or DER: credential values
// travel in headers and may hold no line break (`base64 -w0 key.pem`
// is the easy way to store one). Its errors never quote the input.
func ParsePrivateKey(text string) (*rsa.PrivateKey, error) {
	text = strings.TrimSpace(strings.ReplaceAll(text, `\n`, "\n"))
	if !strings.HasPrefix(text, "-----") {
		raw, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil, errors.New("the private key is neither PEM nor base64")
		}
		if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("-----")) {
			return parseKeyDER("PRIVATE KEY", raw)
		}
		text = string(raw)
	}
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("the private key is not PEM")
	}
	return parseKeyDER(block.Type, block.Bytes)
}

func parseKeyDER(typ string, der []byte) (*rsa.PrivateKey, error) {
	if typ == "PRIVATE KEY" {
		if _, err := x509.ParsePKCS8PrivateKey(der); err != nil {
			if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
				return k, nil
			}
		}
	}
	block := &pem.Block{Type: typ, Bytes: der}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("the PKCS#1 private key does not parse")
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("the PKCS#8 private key does not parse")
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("the private key is not RSA (GitHub Apps sign with RS256)")
		}
		return rk, nil
	}
	return nil, fmt.Errorf("PEM block %q is not an RSA private key", block.Type)
}

// fetchGitHub mints an installation access token.
func fetchGitHub(ctx context.Context, env *Env, s Spec, now time.Time) (Fetched, error) {
	pemText, err := env.Lookup(s.PrivateKey)
	if err != nil {
		return Fetched{}, err
	}
	key, err := ParsePrivateKey(pemText)
	if err != nil {
		return Fetched{}, fmt.Errorf("credential %s: %w", s.PrivateKey, err)
	}
	jwt, err := AppJWT(key, s.AppID, now)
	if err != nil {
		return Fetched{}, err
	}
	var body io.Reader = http.NoBody
	if len(s.Repositories) > 0 || len(s.Permissions) > 0 {
		b, err := json.Marshal(struct {
			Repositories []string          `json:"repositories,omitempty"`
			Permissions  map[string]string `json:"permissions,omitempty"`
		}{s.Repositories, s.Permissions})
		if err != nil {
			return Fetched{}, err
		}
		body = bytes.NewReader(b)
	}
	api := s.APIURL
	if api == "" {
		api = DefaultGitHubAPI
	}
	target := strings.TrimSuffix(api, "/") + "/app/installations/" + s.InstallationID + "/access_tokens"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, body)
	if err != nil {
		return Fetched{}, fmt.Errorf("installation token request: %w", err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("Authorization", "Bearer "+jwt)
	if body != http.NoBody {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := env.Client.Do(req)
	if err != nil {
		return Fetched{}, fmt.Errorf("GitHub %s: %w", endpoint(target), scrubbedErr(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return Fetched{}, fmt.Errorf("GitHub %s: reading the answer: %w", endpoint(target), err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return Fetched{}, fmt.Errorf("GitHub %s answered HTTP %d", endpoint(target), resp.StatusCode)
	}
	var r struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return Fetched{}, fmt.Errorf("GitHub %s: the answer is not the documented {token, expires_at}", endpoint(target))
	}
	if !validToken(r.Token) {
		return Fetched{}, fmt.Errorf("GitHub %s: the answer has no usable token", endpoint(target))
	}
	if !r.ExpiresAt.After(now) {
		return Fetched{}, fmt.Errorf("GitHub %s: expires_at is missing or in the past", endpoint(target))
	}
	return Fetched{Token: r.Token, Expiry: r.ExpiresAt}, nil
}
