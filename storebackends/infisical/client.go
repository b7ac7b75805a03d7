package infisical

import (
	"github.com/agentvault/caddy-agent-vault/storebackends/storehttp"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// apiError is a failed Infisical request, described without the raw
// response body, the token or the client secret.
type apiError struct {
	op     string // what was attempted, e.g. "listing secrets in prod:/agents"
	status int    // HTTP status; 0 when no response arrived
	reason string
}

func (e *apiError) Error() string {
	if e.status == 0 {
		return e.op + ": " + e.reason
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", e.op, e.reason, e.status)
}

// isUnauthorized reports whether Infisical answered 401: the token is
// expired, revoked or unknown.
func isUnauthorized(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusUnauthorized
}

const (
	// maxErrorBodyBytes is how much of an error response is read for
	// its message.
	maxErrorBodyBytes = 64 << 10
)

// call sends one request to Infisical and decodes a 200 answer into
// out. body (if not nil) is sent as JSON; token (if not empty) as a
// bearer token. Redirects are refused, the body is capped, and errors
// carry neither the body nor any credential.
func (f *Fetcher) call(ctx context.Context, op, method, path string, query url.Values, body any, token string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return &apiError{op: op, reason: "encoding the request failed"}
		}
		rd = bytes.NewReader(b)
	}
	u := f.cfg.SiteURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return &apiError{op: op, reason: f.mask(describe(err))}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "agent-vault")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return &apiError{op: op, reason: f.mask(describe(err))}
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode != http.StatusOK: // redirects never get here: storehttp.Guard refuses them
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
		return &apiError{op: op, status: resp.StatusCode, reason: storehttp.ClipReason(f.mask(errorMessage(resp.StatusCode, data)))}
	}
	data, err := readCapped(resp.Body, f.cfg.maxResponseBytes)
	if err != nil {
		return &apiError{op: op, status: resp.StatusCode, reason: f.mask(describe(err))}
	}
	if err := json.Unmarshal(data, out); err != nil {
		// json's messages may quote a piece of the body: never repeat it.
		return &apiError{op: op, status: resp.StatusCode, reason: "malformed JSON in Infisical's response"}
	}
	return nil
}

// errTooLarge is returned for a body over the configured cap.
var errTooLarge = errors.New("response is too large")

// readCapped reads r to the end, failing (instead of truncating) when it
// holds more than limit bytes.
func readCapped(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w (over %d bytes)", errTooLarge, limit)
	}
	return data, nil
}

// describe returns a short reason for a transport error, without the
// URL (the operation already names what was asked).
func describe(err error) string {
	var ue *url.Error
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ue):
		return ue.Err.Error()
	default:
		return err.Error()
	}
}

// errorMessage extracts the message of Infisical's error body
// ({"statusCode":401,"message":"...","error":"UnauthorizedError"}) as one
// clean line; a body that is not such JSON (a proxy's HTML page, say) is
// never repeated, only the status text.
func errorMessage(status int, body []byte) string {
	var e struct {
		Message json.RawMessage `json:"message"`
		Error   string          `json:"error"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil {
		// message is a string, except for validation errors, where it may
		// be a list of issues: those are summarised by the error kind.
		if json.Unmarshal(e.Message, &msg) != nil {
			msg = ""
		}
		if msg == "" {
			msg = e.Error
		}
	}
	msg = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(msg))
	if msg == "" {
		return strings.ToLower(http.StatusText(status))
	}
	return msg
}

// mask replaces every credential the fetcher holds with a marker, in
// case a server or proxy echoed one.
func (f *Fetcher) mask(s string) string {
	for _, secret := range []string{f.cfg.ClientSecret, f.cfg.Token, f.session.token} {
		// Very short strings would garble the message and cannot be real
		// Infisical credentials.
		if len(secret) >= 4 {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}
