package e2etest

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/wsframe"
)

// Whatever form an injected secret takes on the wire (raw, Basic
// base64, query-escaped, path), an upstream that echoes it back shows
// the agent no secret; the log never holds one either.
func TestRedactionOfEncodedForms(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	const password = "basic+pass/word=secret&1"
	const queryKey = "query key+/=&secret"
	const pathTok = "pathSECRETtoken123"
	s.putCredential("BASIC_PASS", password)
	s.putCredential("QUERY_KEY", queryKey)
	s.putCredential("PATH_TOKEN", pathTok)
	port := up.URL[strings.LastIndex(up.URL, ":")+1:]
	s.putService("basic", map[string]any{"host": "127.0.0.1:" + port + "/echo/basic", "auth": map[string]any{"type": "basic", "username": "bot", "password": "BASIC_PASS"}})
	s.putService("query", map[string]any{"host": "127.0.0.1:" + port + "/echo/query", "auth": map[string]any{"type": "query", "param": "key", "key": "QUERY_KEY"}})
	s.putService("path", map[string]any{"host": "127.0.0.1:" + port + "/echo/path/*", "auth": map[string]any{"type": "custom", "headers": map[string]string{"X-Unused": "{{ PATH_TOKEN }}"}}})
	base := "https://127.0.0.1:" + port

	out, _, code := s.launch(nil, "sh", "-c", `curl -sS -D - `+base+`/echo/basic; curl -sS -D - "`+base+`/echo/query"; curl -sS -D - "`+base+`/echo/path/$PATH_TOKEN"`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !strings.Contains(up.reqs[0].Header.Get("Authorization"), base64.StdEncoding.EncodeToString([]byte("bot:"+password))) {
		t.Fatalf("basic upstream got %q", up.reqs[0].Header.Get("Authorization"))
	}
	if got, _ := url.ParseQuery(up.reqs[1].RawQuery); got.Get("key") != queryKey {
		t.Fatalf("query upstream got %q", up.reqs[1].RawQuery)
	}
	if up.reqs[2].Path != "/echo/path/"+pathTok {
		t.Fatalf("path upstream got %q", up.reqs[2].Path)
	}
	for _, form := range []string{
		password, url.QueryEscape(password), base64.StdEncoding.EncodeToString([]byte("bot:" + password)),
		queryKey, url.QueryEscape(queryKey),
		pathTok,
	} {
		mustNotContain(t, "agent's view", out, form)
		mustNotContain(t, "server log", s.logs.String(), form)
	}
	mustContain(t, "agent's view", out, "you sent:")
}

// Trailers and 103 Early Hints are scanned too; one gzip coding is
// decoded and scanned, a stacked Content-Encoding the proxy cannot scan
// is refused; Range is dropped when a secret is injected.
func TestRedactionTrailersEarlyHintsEncodings(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	sess := s.newSession(t, nil, "10m")
	client := sess.agentClient(t)

	var early []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		early = append(early, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://"+up.hostPort()+"/trailer", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if body != "body\n" {
		t.Fatalf("body %q", body)
	}
	if len(early) != 1 {
		t.Fatalf("103 responses seen: %v", early)
	}
	mustNotContain(t, "103 Link header", early[0], githubSecret)
	mustNotContain(t, "trailer", resp.Trailer.Get("X-Echo"), githubSecret)
	mustContain(t, "trailer", resp.Trailer.Get("X-Echo"), "agvph_")

	// The agent names the codings it takes, so its transport decodes
	// nothing and the test reads what the proxy sent.
	req, _ = http.NewRequest("GET", "https://"+up.hostPort()+"/stacked", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body = readBody(t, resp)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Agent-Vault-Refusal") != "upstream" {
		t.Fatalf("stacked encoding: %d %q", resp.StatusCode, body)
	}
	mustNotContain(t, "refusal", body, githubSecret)

	req, _ = http.NewRequest("GET", "https://"+up.hostPort()+"/gzip", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body = readBody(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("gzip: %d Content-Encoding %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	mustNotContain(t, "decoded gzip body", body, githubSecret)
	mustContain(t, "decoded gzip body", body, "you sent: Bearer agvph_")
	if ae := up.last(t).Header.Get("Accept-Encoding"); ae != "identity, gzip" {
		t.Fatalf("upstream got Accept-Encoding %q", ae)
	}

	req, _ = http.NewRequest("GET", "https://"+up.hostPort()+"/echo/range", nil)
	req.Header.Set("Range", "bytes=0-7")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if r := up.last(t).Header.Get("Range"); r != "" {
		t.Fatalf("Range %q reached an upstream that received a secret", r)
	}
}

// Revoking a session closes an upgraded (WebSocket) connection too.
func TestRevokeClosesUpgradedConnection(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	sess := s.newSession(t, nil, "10m")
	conn := dialTunnelTLS(t, s, sess, up.hostPort())
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+up.hostPort()+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	r, err := http.ReadResponse(br, nil)
	if err != nil || r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", r, err)
	}
	s.mustAPI("DELETE", "/api/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
	// The upstream echoes one message and then waits; after revocation
	// the proxy must have closed the agent's side: reading gives EOF
	// (or an error), not an echo.
	conn.Write(wsframe.Append(nil, wsframe.Frame{Fin: true, Opcode: wsframe.OpText, Masked: true, Payload: []byte("after")})) // may fail: the connection is closed
	if got, err := wsRecv(br); err == nil {
		t.Fatalf("upgraded connection still works after revocation: %q", got)
	}
}

// A config reload keeps sessions: an agent's token still works after.
func TestReloadKeepsSessions(t *testing.T) {
	ca := newTestCA(t)
	up := newUpstream(t, ca, true)
	s := startServer(t, ca, serverOpts{})
	s.putCredential("GITHUB_TOKEN", githubSecret)
	s.putService("github", map[string]any{"host": up.hostPort(), "auth": map[string]any{"type": "bearer", "token": "GITHUB_TOKEN"}})
	sess := s.newSession(t, nil, "10m")

	cfg, _ := os.ReadFile(s.config)
	changed := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(changed, []byte(strings.Replace(string(cfg), "unmatched deny", "unmatched deny\n\t\tidle_timeout 3m", 1)), 0o600)
	reload := exec.Command(bin("agent-vault"), "reload", "--config", changed)
	reload.Env = s.env
	if out, err := reload.CombinedOutput(); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	resp, err := sess.agentClient(t).Get("https://" + up.hostPort() + "/user")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 {
		t.Fatalf("after reload: %d %s", resp.StatusCode, body)
	}
	if up.last(t).Header.Get("Authorization") != "Bearer "+githubSecret {
		t.Fatal("not injected after reload")
	}
	var creds struct {
		Credentials []map[string]any `json:"credentials"`
	}
	s.mustAPI("GET", "/api/v1/credentials", nil, 200, &creds)
	if len(creds.Credentials) != 1 {
		t.Fatalf("credentials after reload: %v", creds)
	}
}

// `agent-vault server -d` starts on the embedded Caddyfile.example in
// the background; `server stop` stops it; `version` answers.
func TestServerVerbs(t *testing.T) {
	ca := newTestCA(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	apiAddr, proxyAddr := freePort(t), freePort(t)
	env := serverEnv(t, ca, serverOpts{dataDir: dataDir}, "127.0.0.1:1", "127.0.0.1:2") // the ports come from flags
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin("agent-vault"), args...)
		cmd.Env = env
		logFile, _ := os.Create(filepath.Join(t.TempDir(), "out.log"))
		defer logFile.Close()
		cmd.Stdout, cmd.Stderr = logFile, logFile // not a pipe: the daemon inherits it
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			out, _ := os.ReadFile(logFile.Name())
			if err != nil {
				t.Fatalf("agent-vault %v: %v\n%s", args, err, out)
			}
			return string(out)
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGKILL)
			t.Fatalf("agent-vault %v did not return", args)
		}
		return ""
	}
	out := run("version")
	mustContain(t, "version", out, "agent-vault")
	mustContain(t, "version", out, "caddy v2")

	_, apiPort, _ := strings.Cut(apiAddr, ":")
	_, proxyPort, _ := strings.Cut(proxyAddr, ":")
	run("server", "--port", apiPort, "--proxy-port", proxyPort, "-d")
	t.Cleanup(func() {
		stop := exec.Command(bin("agent-vault"), "server", "stop")
		stop.Env = env
		stop.Run()
	})
	resp, err := directClient.Get("http://" + apiAddr + "/healthz")
	if err != nil {
		t.Fatalf("server -d is not serving: %v", err)
	}
	readBody(t, resp)
	if _, err := os.Stat(filepath.Join(dataDir, "admin.token")); err != nil {
		t.Fatal(err)
	}
	run("server", "stop")
	if _, err := directClient.Get("http://" + apiAddr + "/healthz"); err == nil {
		t.Fatal("server still serving after `server stop`")
	}
}
