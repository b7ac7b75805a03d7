package hashicorp

import (
	"github.com/agentvault/caddy-agent-vault/storebackends/storehttp"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/api"
)

// vaultError is a failed Vault request, described without the raw
// response body, the token or the AppRole credentials.
type vaultError struct {
	op     string // what was attempted, e.g. "listing secret/metadata/agents"
	status int    // HTTP status; 0 when no response arrived
	reason string
}

func (e *vaultError) Error() string {
	if e.status == 0 {
		return e.op + ": " + e.reason
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.op, e.reason, e.status)
}

// isPermissionDenied reports whether Vault answered 403: the token is
// dead, expired, or lacks a policy for the path.
func isPermissionDenied(err error) bool {
	var ve *vaultError
	return errors.As(err, &ve) && ve.status == http.StatusForbidden
}

// fail turns an error from vault/api into a vaultError for op.
//
// vault/api's own messages may embed the raw response body (for a
// non-JSON error page), so only Vault's decoded error strings are kept;
// then every credential the fetcher holds is masked, in case a server
// or proxy echoed one.
func (f *Fetcher) fail(op string, err error) *vaultError {
	ve := &vaultError{op: f.mask(op), reason: storehttp.ClipReason(f.mask(describe(err)))}
	var re *api.ResponseError
	if errors.As(err, &re) {
		ve.status = re.StatusCode
	}
	return ve
}

// describe returns a short, body-free reason for err.
func describe(err error) string {
	var re *api.ResponseError
	var ue *url.Error
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &re):
		if msg := vaultMessage(re); msg != "" {
			return msg
		}
		return strings.ToLower(http.StatusText(re.StatusCode))
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &syntaxErr), errors.As(err, &typeErr):
		return "malformed JSON in Vault's response"
	case errors.As(err, &ue):
		// The URL is already in op; keep the cause (dial, TLS, redirect).
		return ue.Err.Error()
	default:
		return err.Error()
	}
}

// errorCountRE matches the header line of Vault's multi-error format
// ("1 error occurred:").
var errorCountRE = regexp.MustCompile(`^\d+ errors? occurred:$`)

// vaultMessage flattens the error strings Vault put in its JSON body
// into one line; it returns "" when Vault gave none or the body was not
// JSON (whose raw text is never repeated).
func vaultMessage(re *api.ResponseError) string {
	if re.RawError {
		return ""
	}
	var parts []string
	for _, e := range re.Errors {
		for line := range strings.Lines(e) {
			line = strings.TrimSpace(line)
			line = strings.TrimSpace(strings.TrimPrefix(line, "*"))
			if line == "" || errorCountRE.MatchString(line) {
				continue
			}
			parts = append(parts, line)
		}
	}
	msg := strings.Join(parts, "; ")
	msg = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	return msg // clipped by the caller, after masking
}

// mask replaces every credential the fetcher holds with a marker.
func (f *Fetcher) mask(s string) string {
	for _, secret := range []string{f.cfg.Token, f.cfg.SecretID, f.cfg.RoleID, f.client.Token()} {
		// Very short strings would garble the message and cannot be real
		// Vault credentials.
		if len(secret) >= 4 {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

// noResponse builds a vaultError for a response that lacks what op needs.
func noResponse(op string, status int, what string) *vaultError {
	return &vaultError{op: op, status: status, reason: what}
}
