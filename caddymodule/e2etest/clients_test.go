package e2etest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// session is what POST /api/v1/sessions answers.
type session struct {
	ID           string            `json:"id"`
	Token        string            `json:"token"`
	ProxyURL     string            `json:"proxy_url"`
	CAPEM        string            `json:"ca_pem"`
	ExpiresAt    time.Time         `json:"expires_at"`
	Placeholders map[string]string `json:"placeholders"`
}

func (s *server) newSession(t testing.TB, services []string, ttl string) session {
	t.Helper()
	body := map[string]any{"ttl": ttl}
	if services != nil {
		body["services"] = services
	}
	var out session
	s.mustAPI("POST", "/api/v1/sessions", body, http.StatusCreated, &out)
	if out.Token == "" || out.ID == "" {
		t.Fatalf("session without id/token: %+v", out)
	}
	return out
}

func (s *server) putCredential(name, value string) {
	s.t.Helper()
	var out map[string]any
	got := s.api("PUT", "/api/v1/credentials/"+name, map[string]string{"value": value}, &out)
	if got != http.StatusCreated && got != http.StatusOK {
		s.t.Fatalf("PUT credential %s: %d %v", name, got, out)
	}
}

func (s *server) putService(name string, svc map[string]any) {
	s.t.Helper()
	s.mustAPI("PUT", "/api/v1/services/"+name, svc, http.StatusOK, nil)
}

// agentClient is what a Go agent running under av-launch would build:
// the proxy with the session token, and the session's CA as trust.
func (sess session) agentClient(t testing.TB) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(sess.CAPEM)) {
		t.Fatal("session ca_pem does not parse")
	}
	proxy, _ := url.Parse(sess.ProxyURL)
	proxy.User = url.UserPassword("av", sess.Token)
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             http.ProxyURL(proxy),
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2: true,
		},
		Timeout: 30 * time.Second,
	}
}

// rawConnect sends a CONNECT with the given Proxy-Authorization (none
// if empty) and returns the proxy's answer and the open connection.
func rawConnect(t testing.TB, proxyAddr, target, proxyAuth string) (*http.Response, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", proxyAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if proxyAuth != "" {
		fmt.Fprintf(conn, "Proxy-Authorization: %s\r\n", proxyAuth)
	}
	io.WriteString(conn, "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	return resp, conn
}

func basicAuth(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("av:"+token))
}

func readBody(t testing.TB, r *http.Response) string {
	t.Helper()
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tlsOverTunnel runs TLS inside an accepted CONNECT tunnel, as a client
// that trusts the session CA would.
func tlsOverTunnel(t testing.TB, conn net.Conn, sess session, serverName string) (*tls.Conn, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(sess.CAPEM))
	tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: serverName, NextProtos: []string{"http/1.1"}})
	return tc, tc.Handshake()
}

func mustContain(t testing.TB, what, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%s: want it to contain %q, got:\n%s", what, sub, s)
	}
}

func mustNotContain(t testing.TB, what, s, sub string) {
	t.Helper()
	if strings.Contains(s, sub) {
		t.Fatalf("%s: must not contain %q, got:\n%s", what, sub, s)
	}
}
