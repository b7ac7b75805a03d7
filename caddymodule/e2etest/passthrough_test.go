package e2etest

// "intercept": false: a passthrough service whose tunnels the proxy
// relays unread after checking the ClientHello's SNI. A client pinning
// the upstream's own key works through it (curl --pinnedpubkey under
// av-launch, and a Go client comparing certificates); a ClientHello
// naming another host than the CONNECT is refused with a TLS alert and
// the upstream never sees a connection; such a service cannot carry a
// credential (400 from the API).

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// rawServiceFor is a passthrough service with intercept: false for the
// upstream by name: localhost (its certificate names it), since a
// relayed tunnel needs an SNI and clients send none for an address.
func rawServiceFor(up *upstream) (map[string]any, string) {
	_, port, _ := net.SplitHostPort(up.hostPort())
	target := "localhost:" + port
	return map[string]any{"host": target, "auth": map[string]any{"type": "passthrough"}, "intercept": false}, target
}

func TestPassthroughNoIntercept(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	svc, target := rawServiceFor(up)
	s.putService("pinned", svc)
	leaf := up.Certificate()
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	pin := "sha256//" + base64.StdEncoding.EncodeToString(sum[:])

	// curl under av-launch, trusting only the upstream's CA and pinning
	// its key: it works only if the agent's TLS reaches the upstream.
	out, errOut, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "--cacert", ca.pemPath, "--pinnedpubkey", pin, "https://"+target+"/pinned")
	if code != 0 {
		t.Fatalf("pinned curl through the proxy: exit %d\n%s\n%s", code, out, errOut)
	}
	mustContain(t, "curl's output", out, `{"login":"octocat"}`)
	if got := up.last(t); got.Path != "/pinned" || got.Header.Get("Authorization") != "" {
		t.Fatalf("the upstream got %s with Authorization %q", got.Path, got.Header.Get("Authorization"))
	}
	// It went through the proxy (not around it): one entry for the
	// tunnel, with the service, the bytes each way and the duration.
	es, body := activityEntries(t, s, "service=pinned", func(es []apiwire.ActivityEntry) bool { return len(es) > 0 })
	e := es[0]
	if e.Method != http.MethodConnect || e.Decision != "forwarded" || e.Host != "localhost" || e.BytesIn <= 0 || e.BytesOut <= 0 || e.DurationMS <= 0 {
		t.Errorf("the relayed tunnel's entry: %s", body)
	}

	sess := s.newSession(t, []string{"pinned"}, "10m")
	proxyURL, _ := url.Parse(sess.ProxyURL)
	proxyURL.User = url.UserPassword("av", sess.Token)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	t.Run("a Go client sees the upstream's own certificate", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{
			RootCAs: roots,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if !cs.PeerCertificates[0].Equal(leaf) {
					return errors.New("not the upstream's own certificate")
				}
				return nil
			},
		}}}
		resp, err := c.Get("https://" + target + "/go")
		if err != nil {
			t.Fatal(err)
		}
		if b := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(b, "octocat") {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	})

	t.Run("an SNI that differs from the CONNECT target is refused", func(t *testing.T) {
		before := up.opened.Load()
		resp, conn := rawConnect(t, s.proxyAddr, target, basicAuth(sess.Token))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		err := tls.Client(conn, &tls.Config{ServerName: "other.localhost", RootCAs: roots}).Handshake()
		if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Fatalf("handshake with another SNI: %v, want the unrecognized_name alert", err)
		}
		es, body := activityEntries(t, s, "service=pinned&decision=refused", func(es []apiwire.ActivityEntry) bool { return len(es) > 0 })
		if es[0].Status != http.StatusMisdirectedRequest || es[0].Code != "misdirected" || !strings.Contains(es[0].Reason, `names "other.localhost" but the CONNECT was to localhost`) {
			t.Errorf("the refusal's entry: %s", body)
		}
		if n := up.opened.Load() - before; n != 0 {
			t.Fatalf("the upstream accepted %d connections for the refused tunnel", n)
		}
	})

	t.Run("a service with intercept false cannot carry a credential", func(t *testing.T) {
		var out apiwire.Error
		bad := map[string]any{"host": target, "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}, "intercept": false}
		if got := s.api("PUT", "/api/v1/services/leaky", bad, &out); got != http.StatusBadRequest || !strings.Contains(out.Error, `only auth type "passthrough" may use it`) {
			t.Fatalf("PUT: %d %q, want 400", got, out.Error)
		}
		bad = map[string]any{"host": target, "auth": map[string]any{"type": "passthrough"}, "intercept": false, "methods": []string{"GET"}}
		if got := s.api("PUT", "/api/v1/services/ruled", bad, &out); got != http.StatusBadRequest || !strings.Contains(out.Error, "methods cannot apply") {
			t.Fatalf("PUT with methods: %d %q, want 400", got, out.Error)
		}
	})
}
