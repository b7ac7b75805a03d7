package e2etest

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const githubSecret = "ghp_realSecretValue0123456789abcdefXYZ"

// Journeys 1, 2, 3 and 6: start on Caddyfile.example, register a
// credential and a service, run curl under av-launch, restart, and
// find everything as it was with no secret in plaintext on disk.
func TestJourneyStartRegisterRunRestart(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})

	// 1. Start: health, admin token file, CA.
	resp, err := directClient.Get("http://" + s.apiAddr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	fi, err := os.Stat(filepath.Join(s.dataDir, "admin.token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v mode %v", err, fi)
	}
	rootPEM := getCA(t, s)
	if len(s.adminToken()) < 32 {
		t.Fatal("generated admin token is too short")
	}

	// 2. Register.
	if code := s.apiWithToken("wrong-token-wrong-token", "GET", "/api/v1/credentials", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("wrong admin token: %d, want 401", code)
	}
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	var creds struct {
		Credentials []map[string]any `json:"credentials"`
	}
	s.mustAPI("GET", "/api/v1/credentials", nil, 200, &creds)
	if len(creds.Credentials) != 1 || creds.Credentials[0]["name"] != "GITHUB_TOKEN" || creds.Credentials[0]["store"] != "builtin" {
		t.Fatalf("credentials list: %+v", creds)
	}
	var raw json_raw
	s.mustAPI("GET", "/api/v1/credentials", nil, 200, &raw)
	mustNotContain(t, "credential list", string(raw), githubSecret)

	// 3. Run an agent: curl needs no -k and sends no credential itself.
	out, errOut, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/user")
	if code != 0 {
		t.Fatalf("av-launch curl: exit %d\nstdout: %s\nstderr: %s\nserver: %s", code, out, errOut, s.logs.String())
	}
	mustContain(t, "curl output", out, `"login":"octocat"`)
	got := up.last(t)
	if got.Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Fatalf("upstream got Authorization %q", got.Header.Get("Authorization"))
	}
	if got.Header.Get("Proxy-Authorization") != "" {
		t.Fatal("Proxy-Authorization reached the upstream")
	}

	// The child's environment and argv hold placeholders only.
	out, _, code = s.launch(nil, "sh", "-c", `env; cat /proc/$$/cmdline`, "argv-marker")
	if code != 0 {
		t.Fatalf("env dump failed: %d", code)
	}
	mustNotContain(t, "child env", out, githubSecret)
	mustNotContain(t, "child env", out, s.adminToken())
	mustContain(t, "child env", out, "GITHUB_TOKEN=agvph_")
	mustContain(t, "child env", out, "HTTPS_PROXY=http://av:avs_")

	// An echoing upstream shows the agent its placeholder, not the secret.
	out, _, code = s.launch(nil, "sh", "-c", `curl -sS -D - -H "Authorization: Bearer $GITHUB_TOKEN" https://`+up.hostPort()+`/echo/`)
	if code != 0 {
		t.Fatalf("echo: exit %d %s", code, out)
	}
	mustNotContain(t, "echoed response", out, githubSecret)
	mustContain(t, "echoed response", out, "you sent: Bearer agvph_")
	if up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Fatal("echo upstream did not receive the secret")
	}

	// The log line names the credential, never its value.
	if len(s.logs.lines(`"proxied request"`)) == 0 {
		t.Fatalf("no per-request log line:\n%s", s.logs.String())
	}
	mustContain(t, "log", strings.Join(s.logs.lines(`"proxied request"`), "\n"), `"credentials":["GITHUB_TOKEN"]`)
	mustNotContain(t, "server log", s.logs.String(), githubSecret)

	// 6. Durability: restart on the same data dir.
	var svcsBefore, svcsAfter json_raw
	s.mustAPI("GET", "/api/v1/services", nil, 200, &svcsBefore)
	s.stop()
	s2 := startServer(t, ca, serverOpts{dataDir: s.dataDir})
	var credsAfter struct {
		Credentials []map[string]any `json:"credentials"`
	}
	s2.mustAPI("GET", "/api/v1/credentials", nil, 200, &credsAfter)
	if len(credsAfter.Credentials) != 1 || credsAfter.Credentials[0]["version"] != creds.Credentials[0]["version"] {
		t.Fatalf("credentials changed across restart: %+v vs %+v", credsAfter, creds)
	}
	s2.mustAPI("GET", "/api/v1/services", nil, 200, &svcsAfter)
	if string(svcsBefore) != string(svcsAfter) {
		t.Fatalf("services changed across restart:\n%s\n%s", svcsBefore, svcsAfter)
	}
	if getCA(t, s2) != rootPEM {
		t.Fatal("CA root changed across restart")
	}
	out, _, code = s2.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+up.hostPort()+"/user")
	if code != 0 || up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Fatalf("after restart: exit %d %s", code, out)
	}
	s2.stop()
	err = filepath.WalkDir(s.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil // sockets and the like
		}
		if strings.Contains(string(b), githubSecret) || strings.Contains(string(b), masterPassword) {
			t.Errorf("%s holds a secret in plaintext", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

type json_raw []byte

func (j *json_raw) UnmarshalJSON(b []byte) error { *j = append((*j)[:0], b...); return nil }

func getCA(t *testing.T, s *server) string {
	t.Helper()
	resp, err := directClient.Get("http://" + s.apiAddr + "/api/v1/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	block, _ := pem.Decode([]byte(body))
	if block == nil {
		t.Fatalf("ca.pem: %q", body)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !c.IsCA {
		t.Fatalf("ca.pem is not a CA certificate: %v", err)
	}
	return body
}

// Journey 1, the failure side: without a master password the server
// refuses to start and says why.
func TestStartFailsWithoutMasterPassword(t *testing.T) {
	ca := newTestCA(t)
	s := launchServer(t, ca, serverOpts{noPassword: true})
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("server started without a master password")
	}
	if s.cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("exit code 0")
	}
	mustContain(t, "start-up error", s.logs.String(), "AGENT_VAULT_MASTER_PASSWORD")
}

// A wrong master password on an existing store stops start-up too.
func TestStartFailsWithWrongMasterPassword(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("A_TOKEN", "value-that-is-secret")
	s.stop()
	s2 := launchServer(t, ca, serverOpts{dataDir: s.dataDir, extraEnv: []string{"AGENT_VAULT_MASTER_PASSWORD=not the password"}})
	select {
	case <-s2.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("server started with a wrong master password")
	}
	mustContain(t, "start-up error", strings.ToLower(s2.logs.String()), "password")
}

// Journey 4: egress is deny-by-default, passthrough allow-lists a host,
// and a placeholder headed to the wrong host is refused.
func TestJourneyEgress(t *testing.T) {
	ca := newTestCA(t)
	api := newUpstream(t, ca, true)
	other := newUpstream(t, ca, true)
	open := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": api.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	s.putService("docs", map[string]any{"host": open.hostPort(), "auth": map[string]any{"type": "passthrough"}})

	// A host no service covers: 403 with a reason the agent reads
	// (inside the tunnel), never contacted.
	out, errOut, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+other.hostPort()+"/")
	if code == 0 {
		t.Fatalf("curl to an uncovered host succeeded: %s", out)
	}
	mustContain(t, "curl error", errOut, "403")
	mustContain(t, "curl's body", out, "agent-vault: no service in this session's scope covers "+other.hostPort())
	if other.count() != 0 {
		t.Fatal("the uncovered host was contacted")
	}

	// passthrough: reachable, nothing injected.
	out, _, code = s.launch(nil, "curl", "-sS", "--fail-with-body", "https://"+open.hostPort()+"/")
	if code != 0 {
		t.Fatalf("passthrough: exit %d %s", code, out)
	}
	if open.last(t).Header.Get("Authorization") != "" {
		t.Fatal("passthrough service got an Authorization header")
	}

	// The github placeholder sent to the passthrough host: refused.
	before := open.count()
	out, _, code = s.launch(nil, "sh", "-c", `curl -sS -w '%{http_code}' -H "Authorization: Bearer $GITHUB_TOKEN" https://`+open.hostPort()+`/`)
	mustContain(t, "misdirected placeholder", out, "not bound")
	mustContain(t, "misdirected placeholder", out, "403")
	if open.count() != before {
		t.Fatal("a request carrying a misdirected placeholder was forwarded")
	}

	// A session scoped to docs only cannot reach github.
	out, errOut, code = s.launch([]string{"--services", "docs"}, "curl", "-sS", "--fail-with-body", "https://"+api.hostPort()+"/user")
	if code == 0 {
		t.Fatalf("out-of-scope service reachable: %s", out)
	}
	mustContain(t, "scoped curl", errOut, "403")
}

// startTunnelServer starts the server on Caddyfile.example with
// `unmatched tunnel`.
func startTunnelServer(t *testing.T, ca *testCA) *server {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(path, []byte(strings.Replace(string(cfg), "unmatched deny", "unmatched tunnel", 1)), 0o600)
	s := startServer(t, ca, serverOpts{config: path})
	return s
}

// Journey 4, the opt-in: `unmatched tunnel` relays uncovered hosts
// without interception (the agent then sees the real certificate).
func TestUnmatchedTunnel(t *testing.T) {
	ca := newTestCA(t)
	other := newUpstream(t, ca, true)
	s := startTunnelServer(t, ca)
	// curl trusts the bundle av-launch builds; the upstream's own test
	// CA is not in it, so trust it explicitly to prove the certificate
	// is the upstream's and not ours.
	out, errOut, code := s.launch(nil, "sh", "-c", `curl -sS --fail-with-body --cacert `+ca.pemPath+` https://`+other.hostPort()+`/`)
	if code != 0 {
		t.Fatalf("tunnel: exit %d %s %s", code, out, errOut)
	}
	if other.count() != 1 {
		t.Fatal("upstream not reached through the tunnel")
	}
}

// The broker never reaches itself: with loopback allowed and unmatched
// tunnel, a CONNECT or an absolute-form request through the proxy to the
// management API or to the proxy's own port is refused, while another
// loopback upstream is still tunnelled.
func TestSelfEgress(t *testing.T) {
	ca := newTestCA(t)
	other := newUpstream(t, ca, true)
	s := startTunnelServer(t, ca)
	sess := s.newSession(t, nil, "10m")
	auth := basicAuth(sess.Token)

	for what, target := range map[string]string{"the management API": s.apiAddr, "the proxy": s.proxyAddr} {
		resp, _ := rawConnect(t, s.proxyAddr, target, auth)
		if resp.StatusCode != http.StatusForbidden {
			// A 200 is an open tunnel: its body would never end.
			t.Fatalf("CONNECT to %s (%s): %d, want 403", what, target, resp.StatusCode)
		}
		body := readBody(t, resp)
		if !strings.Contains(body, "the broker's own listener") {
			t.Errorf("CONNECT to %s (%s): %d %q, want 403 naming the broker's own listener", what, target, resp.StatusCode, body)
		}

		conn, err := net.DialTimeout("tcp", s.proxyAddr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second)) // a bound on a broken test, not a wait
		fmt.Fprintf(conn, "GET http://%s/healthz HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: %s\r\n\r\n", target, target, auth)
		resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body = readBody(t, resp)
		conn.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "the broker's own listener") {
			t.Errorf("GET http://%s/ (%s): %d %q, want 403 naming the broker's own listener", target, what, resp.StatusCode, body)
		}
	}

	// Not everything is refused: another loopback upstream still tunnels.
	resp, _ := rawConnect(t, s.proxyAddr, other.hostPort(), auth)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT to another loopback upstream: %d %q", resp.StatusCode, readBody(t, resp))
	}
}

// Journey 5: wrong, expired and revoked tokens get 407; a finished
// av-launch leaves no working session behind; revocation closes open
// tunnels.
func TestJourneyAuth(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})

	check407 := func(what, auth string) {
		t.Helper()
		resp, _ := rawConnect(t, s.proxyAddr, up.hostPort(), auth)
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusProxyAuthRequired || resp.Header.Get("Proxy-Authenticate") == "" {
			t.Fatalf("%s: %d %q, want 407 with Proxy-Authenticate", what, resp.StatusCode, body)
		}
	}
	check407("no credentials", "")
	check407("wrong token", basicAuth("avs_wrong"))
	check407("garbage", "Basic !!!")

	// Revoked.
	sess := s.newSession(t, nil, "10m")
	resp, _ := rawConnect(t, s.proxyAddr, up.hostPort(), "Bearer "+sess.Token)
	if resp.StatusCode != 200 {
		t.Fatalf("bearer auth: %d", resp.StatusCode)
	}
	s.mustAPI("DELETE", "/api/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
	check407("revoked", basicAuth(sess.Token))

	// Revocation closes an open tunnel.
	sess = s.newSession(t, nil, "10m")
	client := sess.agentClient(t)
	r, err := client.Get("https://" + up.hostPort() + "/user")
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("before revoke: %v %v", r, err)
	}
	readBody(t, r)
	hits := up.count()
	s.mustAPI("DELETE", "/api/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
	r, err = client.Get("https://" + up.hostPort() + "/user")
	if err == nil {
		body := readBody(t, r)
		if r.StatusCode == 200 {
			t.Fatalf("request after revoke succeeded: %s", body)
		}
	}
	if up.count() != hits {
		t.Fatal("a request after revocation reached the upstream")
	}

	// Expired: a 1s session stops working once its time is up.
	sess = s.newSession(t, nil, "1s")
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, conn := rawConnect(t, s.proxyAddr, up.hostPort(), basicAuth(sess.Token))
		conn.Close() // a 200 opens a tunnel: do not wait on it
		if resp.StatusCode == http.StatusProxyAuthRequired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired session still accepted")
		}
		<-time.After(100 * time.Millisecond) // waiting for wall-clock expiry, not for another goroutine
	}

	// av-launch revokes its session when the child exits.
	out, _, code := s.launch(nil, "sh", "-c", `echo "$HTTPS_PROXY"`)
	if code != 0 {
		t.Fatal("launch failed")
	}
	proxyURL := strings.TrimSpace(out)
	token := proxyURL[strings.Index(proxyURL, "av:")+3 : strings.LastIndex(proxyURL, "@")]
	check407("after av-launch exit", basicAuth(token))
	var list struct {
		Sessions []map[string]any `json:"sessions"`
	}
	s.mustAPI("GET", "/api/v1/sessions", nil, 200, &list)
	for _, se := range list.Sessions {
		if se["status"] == "active" {
			t.Fatalf("a session is still active: %v", se)
		}
	}
}

// Binding: SNI and Host must agree with the CONNECT target.
func TestBinding(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": "localhost:" + up.URL[strings.LastIndex(up.URL, ":")+1:], "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	sess := s.newSession(t, nil, "10m")
	target := "localhost:" + up.URL[strings.LastIndex(up.URL, ":")+1:]

	// SNI for another host: the handshake fails.
	resp, conn := rawConnect(t, s.proxyAddr, target, basicAuth(sess.Token))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	if _, err := tlsOverTunnel(t, conn, sess, "evil.example"); err == nil {
		t.Fatal("TLS with a mismatched SNI succeeded")
	}

	// Right SNI, wrong Host header: 421, not forwarded.
	resp, conn = rawConnect(t, s.proxyAddr, target, basicAuth(sess.Token))
	tc, err := tlsOverTunnel(t, conn, sess, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(tc, "GET /user HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, r)
	if r.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("Host mismatch: %d, want 421", r.StatusCode)
	}
	if up.count() != 0 {
		t.Fatal("misdirected request reached the upstream")
	}
}

// Cleartext: absolute-form http:// is forwarded, but a credential is
// only injected when the service allows cleartext.
func TestCleartext(t *testing.T) {
	ca := newTestCA(t)
	plain := newUpstream(t, ca, false)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("PLAIN_TOKEN", "plain-secret-value-123")
	s.putService("plain", map[string]any{"host": plain.hostPort(), "auth": map[string]any{"type": "bearer", "token": "PLAIN_TOKEN"}})

	out, _, _ := s.launch(nil, "curl", "-sS", "-w", "%{http_code}", "http://"+plain.hostPort()+"/")
	mustContain(t, "cleartext refused", out, "403")
	if plain.count() != 0 {
		t.Fatal("refused cleartext request was forwarded")
	}

	s.putService("plain", map[string]any{"host": plain.hostPort(), "allow_cleartext": true, "auth": map[string]any{"type": "bearer", "token": "PLAIN_TOKEN"}})
	out, _, code := s.launch(nil, "curl", "-sS", "--fail-with-body", "http://"+plain.hostPort()+"/")
	if code != 0 {
		t.Fatalf("allow_cleartext: %d %s", code, out)
	}
	if plain.last(t).Header.Get("Authorization") != "Bearer plain-secret-value-123" {
		t.Fatal("allow_cleartext service did not get its credential")
	}
}

// Streaming, HTTP/2 and WebSocket through an intercepted tunnel.
func TestProtocols(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})

	// HTTP/2 end to end with curl.
	out, _, code := s.launch(nil, "curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version}", "https://"+up.hostPort()+"/user")
	if code != 0 || strings.TrimSpace(out) != "2" {
		t.Fatalf("curl --http2: exit %d version %q", code, out)
	}
	if up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Fatal("h2 request not injected")
	}

	// SSE: the first event arrives while the upstream still holds the
	// second.
	sess := s.newSession(t, nil, "10m")
	resp, err := sess.agentClient(t).Get("https://" + up.hostPort() + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: event 1\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
	close(up.sseGate)
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	mustContain(t, "sse", string(rest), "data: event 2")

	// WebSocket-style upgrade: injected on the handshake, then raw bytes.
	conn := dialTunnelTLS(t, s, sess, up.hostPort())
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+up.hostPort()+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br = bufio.NewReader(conn)
	r, err := http.ReadResponse(br, nil)
	if err != nil || r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", r, err)
	}
	if up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Fatal("upgrade handshake not injected")
	}
	wsSend(t, conn, "hello")
	if got, err := wsRecv(br); err != nil || got != "HELLO" {
		t.Fatalf("websocket echo: %q %v", got, err)
	}
}

func dialTunnelTLS(t testing.TB, s *server, sess session, target string) io.ReadWriter {
	t.Helper()
	resp, conn := rawConnect(t, s.proxyAddr, target, basicAuth(sess.Token))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
	}
	host := target[:strings.LastIndex(target, ":")]
	tc, err := tlsOverTunnel(t, conn, sess, host)
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// `agent-vault adapt` turns Caddyfile.example into the JSON in
// testdata/Caddyfile.example.json (regenerate with UPDATE_GOLDEN=1).
func TestAdaptGolden(t *testing.T) {
	cmd := exec.Command(bin("agent-vault"), "adapt", "--config", filepath.Join(repoRoot, "Caddyfile.example"), "--pretty")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent",
		"AGENT_VAULT_DATA_DIR=" + t.TempDir(),
		"AGENT_VAULT_API_ADDR=127.0.0.1:14321", "AGENT_VAULT_PROXY_ADDR=127.0.0.1:14322",
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	got := strings.ReplaceAll(string(out), cmd.Env[2][len("AGENT_VAULT_DATA_DIR="):], "$DATA_DIR")
	golden := filepath.Join("testdata", "Caddyfile.example.json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("adapted config differs from %s:\n%s", golden, got)
	}
	mustContain(t, "adapted JSON", got, `"{env.AGENT_VAULT_MASTER_PASSWORD}"`) // resolved at start-up, never baked in
}

// `agent-vault list-modules` shows our modules.
func TestListModules(t *testing.T) {
	cmd := exec.Command(bin("agent-vault"), "list-modules")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AGENT_VAULT_DATA_DIR=" + t.TempDir()}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"agent_vault", "http.handlers.agent_vault_proxy", "http.handlers.agent_vault_api", "agent_vault.stores.builtin"} {
		mustContain(t, "list-modules", string(out), id+"\n")
	}
}
