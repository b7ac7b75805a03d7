package caddymodule

import (
	"encoding/base64"
	"errors"
	"strings"
)

// maxProxyAuthLen bounds the header we are willing to decode.
const maxProxyAuthLen = 4096

// parseProxyAuthorization extracts the session token from a
// Proxy-Authorization header. Clients put it there in one of two ways:
// "Basic base64(user:token)" (from http://user:token@proxy URLs, where
// the user name is ignored) or "Bearer token".
func parseProxyAuthorization(h string) (string, error) {
	if h == "" {
		return "", errors.New("no Proxy-Authorization header (run the agent under av-launch)")
	}
	if len(h) > maxProxyAuthLen {
		return "", errors.New("Proxy-Authorization header too long")
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok {
		return "", errors.New("malformed Proxy-Authorization header")
	}
	rest = strings.TrimSpace(rest)
	var token string
	switch strings.ToLower(scheme) {
	case "bearer":
		token = rest
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", errors.New("malformed Basic Proxy-Authorization header")
		}
		user, pass, found := strings.Cut(string(raw), ":")
		if !found {
			return "", errors.New("malformed Basic Proxy-Authorization header")
		}
		// Some clients only support a user name; accept the token there.
		token = pass
		if token == "" {
			token = user
		}
	default:
		return "", errors.New("unsupported Proxy-Authorization scheme (use Basic or Bearer)")
	}
	if token == "" {
		return "", errors.New("empty session token")
	}
	return token, nil
}
