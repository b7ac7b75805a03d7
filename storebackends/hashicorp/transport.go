package hashicorp

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// maxResponseBytes caps one Vault response body, so that a broken or
// hostile server cannot exhaust memory.
const maxResponseBytes = 32 << 20

// guardedTransport refuses redirects and caps response bodies.
//
// vault/api treats any 3xx as success and would then see an empty body,
// which for a LIST reads like "no secrets" and would empty the store;
// following the redirect instead would send the token to whatever host
// the Location names. So a redirect is an error: point Address at the
// active node or at a load balancer.
type guardedTransport struct {
	base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (g guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		return nil, fmt.Errorf("vault answered with a redirect (HTTP %d), which is not followed: point the address at the active node or a load balancer", resp.StatusCode)
	}
	resp.Body = &cappedBody{ReadCloser: resp.Body, left: maxResponseBytes}
	return resp, nil
}

// errResponseTooLarge is returned when a body exceeds maxResponseBytes.
var errResponseTooLarge = errors.New("vault response is larger than 32 MiB")

// cappedBody fails reads past its limit instead of truncating silently.
type cappedBody struct {
	io.ReadCloser
	left int64
}

func (c *cappedBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One more byte tells "exactly at the limit" from "too large".
		var probe [1]byte
		n, err := c.ReadCloser.Read(probe[:])
		if n > 0 {
			return 0, errResponseTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	return n, err
}
