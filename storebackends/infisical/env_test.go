package infisical

import (
	"github.com/agentvault/caddy-agent-vault/storebackends/storehttp"

	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/storebackends/infisical/infisicaltest"
)

// writeCACert saves the TLS test server's certificate as a PEM file.
func writeCACert(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// decoy is a loopback server that must never be contacted.
func decoy(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "decoy", http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestProxyEnvironmentIsIgnored points every proxy variable net/http
// knows at a decoy and checks that the fetcher still talks to Infisical
// directly. The stub is reached as "infisical.test", a name that is not
// loopback, so that a proxy from the environment would apply to it.
func TestProxyEnvironmentIsIgnored(t *testing.T) {
	stub := infisicaltest.NewTLS(t, project, clientID, clientSecret)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_LEAKMARKER", Version: 1})
	proxy, hits := decoy(t)
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(v, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	stubAddr := stub.Server().Listener.Addr().String()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		switch {
		case addr == "infisical.test:443":
			addr = stubAddr
		case !storehttp.IsLoopback(host):
			return nil, fmt.Errorf("test refuses to dial %s", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	h := newHarness(t, stub, func(c *Config) {
		c.SiteURL = "https://infisical.test"
		c.CACertFile = writeCACert(t, stub.Server())
		c.TLSServerName = "example.com" // in httptest's certificate
		c.dialContext = dial
	})
	if h.f.transport.Proxy != nil {
		t.Error("transport has a proxy function")
	}
	if err := h.checkLogin(t); err != nil {
		t.Fatal(err)
	}
	if got := values(h.fetch(t)); got["GITHUB_TOKEN"] != "ghp_LEAKMARKER" {
		t.Fatalf("values = %v", got)
	}
	h.wantEndpoints(t, login, list)
	if n := hits.Load(); n != 0 {
		t.Errorf("a proxy from the environment got %d requests", n)
	}
}

// A redirect is refused, not followed: following it would send the
// client secret or the token to whatever Location names.
func TestRedirectIsRefused(t *testing.T) {
	elsewhere, hits := decoy(t)
	for _, endpoint := range []string{login, list} {
		t.Run(endpoint, func(t *testing.T) {
			h := newHarness(t, nil, nil)
			h.stub.Override(endpoint, infisicaltest.Reply{Status: http.StatusTemporaryRedirect,
				Header: http.Header{"Location": {elsewhere.URL + "/api/v3/secrets/raw"}}})
			wantErr(t, h.fetchErr(t), "infisical answered with a redirect (HTTP 307), which is not followed", "(HTTP 307)")
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

// A body over the cap fails the fetch instead of being read (or cut
// short and misread).
func TestResponseBodyCap(t *testing.T) {
	stub := newStub(t)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "BIG", Value: strings.Repeat("LEAKMARKER", 500), Version: 1})
	h := newHarness(t, stub, func(c *Config) { c.maxResponseBytes = 4096 })
	wantErr(t, h.fetchErr(t), "listing secrets in prod:/agents: response is too large (over 4096 bytes) (HTTP 200)")

	// Just under the cap is fine.
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "BIG", Value: strings.Repeat("LEAKMARKER", 100), Version: 1})
	if got := values(h.fetch(t)); len(got["BIG"]) != 1000 {
		t.Fatalf("values = %d", len(got))
	}
}

func TestTLSVerification(t *testing.T) {
	stub := infisicaltest.NewTLS(t, project, clientID, clientSecret)
	stub.Put("prod", "/agents", infisicaltest.Secret{Key: "GITHUB_TOKEN", Value: "ghp_LEAKMARKER", Version: 1})
	t.Run("system roots reject the test certificate", func(t *testing.T) {
		h := newHarness(t, stub, nil)
		wantErr(t, h.checkLogin(t), "infisical universal auth login failed: ", "certificate")
	})
	t.Run("wrong server name", func(t *testing.T) {
		h := newHarness(t, stub, func(c *Config) { c.CACertFile = writeCACert(t, stub.Server()); c.TLSServerName = "infisical.internal" })
		wantErr(t, h.checkLogin(t), "certificate is valid for")
	})
	t.Run("trusted CA file", func(t *testing.T) {
		h := newHarness(t, stub, func(c *Config) { c.CACertFile = writeCACert(t, stub.Server()) })
		if got := values(h.fetch(t)); got["GITHUB_TOKEN"] != "ghp_LEAKMARKER" {
			t.Fatalf("values = %v", got)
		}
	})
}

func TestTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })
	h := newHarness(t, nil, func(c *Config) { c.SiteURL = srv.URL; c.Timeout = 50 * time.Millisecond })
	wantErr(t, h.checkLogin(t), "infisical universal auth login failed: timed out")
}
