package hashicorp

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
	"slices"
	"sync/atomic"
	"testing"
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

// TestEnvironmentIsIgnored sets every variable vault/api or net/http
// would honour and checks none of them changes where, how or as whom
// the fetcher talks to Vault.
func TestEnvironmentIsIgnored(t *testing.T) {
	fv := newFakeVault(t, true)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	elsewhere, hits := decoy(t)
	caFile := writeCACert(t, fv.srv)

	t.Setenv("VAULT_ADDR", elsewhere.URL)
	t.Setenv("VAULT_AGENT_ADDR", elsewhere.URL)
	t.Setenv("VAULT_TOKEN", "hvs.ENV-TOKEN-"+leakMarker)
	t.Setenv("VAULT_NAMESPACE", "env-namespace")
	t.Setenv("VAULT_HEADERS", `{"X-Leak":"1"}`)
	t.Setenv("VAULT_WRAP_TTL", "5m")
	t.Setenv("VAULT_MAX_RETRIES", "5")
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_HTTP_PROXY", elsewhere.URL)
	t.Setenv("VAULT_PROXY_ADDR", elsewhere.URL)
	t.Setenv("HTTPS_PROXY", elsewhere.URL)
	t.Setenv("HTTP_PROXY", elsewhere.URL)
	t.Setenv("ALL_PROXY", elsewhere.URL)
	t.Setenv("NO_PROXY", "")

	// The fetcher reaches the fake as "vault.test", a name that is not
	// loopback, so that a proxy from the environment would apply to it.
	vaultAddr := fv.srv.Listener.Addr().String()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		switch {
		case addr == "vault.test:8200":
			addr = vaultAddr
		case !storehttp.IsLoopback(host):
			return nil, fmt.Errorf("test refuses to dial %s", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}

	for _, auth := range []string{AuthToken, AuthAppRole} {
		t.Run(auth, func(t *testing.T) {
			h := newHarness(t, fv, func(c *Config) {
				c.Address = "https://vault.test:8200"
				c.CACertFile = caFile
				c.TLSServerName = "example.com" // in httptest's certificate
				c.dialContext = dial
				if auth == AuthAppRole {
					useAppRole(c)
				}
			})
			if h.f.transport.Proxy != nil {
				t.Error("transport has a proxy function")
			}
			fv.inject("LIST /v1/secret/metadata", fakeReply{status: 500, body: `{"errors":["try again"]}`})
			wantErr(t, h.fetchErr(t), "try again (HTTP 500)") // not retried, despite VAULT_MAX_RETRIES
			if got := names(h.fetch(t)); !slices.Equal(got, []string{"TOKEN"}) {
				t.Errorf("names = %q", got)
			}
			wantToken := map[string]string{AuthToken: rootToken, AuthAppRole: "hvs.APPROLE-1-" + leakMarker}[auth]
			lists := 0
			for _, r := range fv.takeRequests() {
				if r.key == "LIST /v1/secret/metadata" {
					lists++
				}
				if r.key != "PUT /v1/auth/approle/login" && r.token != wantToken {
					t.Errorf("%s used token %q, want %q", r.key, r.token, wantToken)
				}
			}
			if lists != 2 {
				t.Errorf("listed %d times, want 2 (no retries)", lists)
			}
			// The fake also checked: no X-Vault-Namespace, no X-Leak, no
			// X-Vault-Wrap-TTL, and no token sent with the login.
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("VAULT_ADDR or a proxy from the environment got %d requests", n)
	}
}

func TestTLSVerification(t *testing.T) {
	fv := newFakeVault(t, true)
	fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
	// Neither of these may weaken verification.
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	t.Setenv("VAULT_CACERT", writeCACert(t, fv.srv))

	t.Run("system roots reject the test certificate", func(t *testing.T) {
		h := newHarness(t, fv, nil)
		wantErr(t, h.checkLogin(t), "looking up the vault token: ", "certificate")
	})
	t.Run("wrong server name", func(t *testing.T) {
		h := newHarness(t, fv, func(c *Config) { c.CACertFile = writeCACert(t, fv.srv); c.TLSServerName = "vault.internal" })
		wantErr(t, h.checkLogin(t), "certificate is valid for")
	})
	t.Run("trusted CA file", func(t *testing.T) {
		h := newHarness(t, fv, func(c *Config) { c.CACertFile = writeCACert(t, fv.srv) })
		if got := names(h.fetch(t)); !slices.Equal(got, []string{"TOKEN"}) {
			t.Errorf("names = %q", got)
		}
	})
}

func TestNamespaceOnEveryRequest(t *testing.T) {
	for _, auth := range []string{AuthToken, AuthAppRole} {
		t.Run(auth, func(t *testing.T) {
			fv := newFakeVault(t, false)
			fv.namespace = "team-a/dev"
			fv.put("secret/app", `{"TOKEN":"t-`+leakMarker+`"}`, 1)
			h := newHarness(t, fv, func(c *Config) {
				c.Namespace, c.KVVersion = "/team-a/dev/", 0
				if auth == AuthAppRole {
					useAppRole(c)
				}
			})
			if err := h.checkLogin(t); err != nil {
				t.Fatal(err)
			}
			h.fetch(t)
			if n := len(fv.takeRequests()); n < 4 {
				t.Errorf("only %d requests", n)
			}
			// The fake records a fault for any request whose
			// X-Vault-Namespace is not "team-a/dev".
		})
	}
}
