package e2etest

// Helpers of the issue 10 journeys (agents, operators, logins, access
// requests, audit, leases): calls of the management API with any kind of
// credential, and the set-up every one of those tests shares.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// loginCookie is the name of the operator login cookie (design: tokens).
const loginCookie = "agent_vault_login"

// cred is how one API call authenticates: a bearer token, a login
// cookie, or neither; header adds request headers (Origin,
// Sec-Fetch-Site).
type cred struct {
	bearer string
	cookie string
	header map[string]string
	// from, if set, is the loopback source address of the connection
	// (the rate limiter keys on the client address).
	from string
}

func bearer(token string) cred { return cred{bearer: token} }

// apiResult is one answer of the management API.
type apiResult struct {
	status int
	body   string
	header http.Header
	resp   *http.Response
}

// errText is the "error" of an apiwire.Error body, or the raw body.
func (r apiResult) errText() string {
	var e apiwire.Error
	if json.Unmarshal([]byte(r.body), &e) == nil && e.Error != "" {
		return e.Error
	}
	return r.body
}

func (r apiResult) String() string { return fmt.Sprintf("%d %s", r.status, strings.TrimSpace(r.body)) }

// call sends one request to the management API. body is sent as is if it
// is a string or []byte, else JSON-encoded; nil sends none.
func (s *server) call(c cred, method, path string, body any) apiResult {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, "http://"+s.apiAddr+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	if c.cookie != "" {
		req.AddCookie(&http.Cookie{Name: loginCookie, Value: c.cookie})
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	client := directClient
	if c.from != "" {
		client = clientFrom(s.t, c.from)
	}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return apiResult{status: resp.StatusCode, body: string(data), header: resp.Header, resp: resp}
}

// clientFrom is a client whose connections leave from the given loopback
// address (127.0.0.0/8 only).
func clientFrom(t testing.TB, ip string) *http.Client {
	t.Helper()
	if !net.ParseIP(ip).IsLoopback() {
		t.Fatalf("clientFrom(%s): loopback only", ip)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, DisableKeepAlives: true},
		Timeout:   30 * time.Second,
	}
}

// must is call that fails the test unless the status is want, and
// decodes a JSON answer into out (if non-nil).
func (s *server) must(c cred, method, path string, body any, want int, out any) apiResult {
	s.t.Helper()
	r := s.call(c, method, path, body)
	if r.status != want {
		s.t.Fatalf("%s %s = %s, want %d", method, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(r.body), out); err != nil {
			s.t.Fatalf("%s %s: decoding %q: %v", method, path, r.body, err)
		}
	}
	return r
}

// admin is the admin token as a cred.
func (s *server) admin() cred { return bearer(s.adminToken()) }

// createAgent creates an agent with the admin token and returns the
// answer (with its token).
func (s *server) createAgent(name string, services []string, maxTTL string) apiwire.Agent {
	s.t.Helper()
	var a apiwire.Agent
	s.must(s.admin(), "POST", "/api/v1/agents", apiwire.AgentCreateRequest{Name: name, Services: services, MaxSessionTTL: maxTTL}, http.StatusCreated, &a)
	if !strings.HasPrefix(a.Token, "avt_") {
		s.t.Fatalf("agent %s: token %q does not start with avt_", name, a.Token)
	}
	return a
}

// createOperator creates an operator with the admin token.
func (s *server) createOperator(name, password, role string) apiwire.Operator {
	s.t.Helper()
	var o apiwire.Operator
	s.must(s.admin(), "POST", "/api/v1/operators", apiwire.OperatorCreateRequest{Name: name, Password: password, Role: role}, http.StatusCreated, &o)
	return o
}

// login logs an operator in and returns the answer.
func (s *server) login(name, password string) apiwire.Login {
	s.t.Helper()
	var l apiwire.Login
	s.must(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: name, Password: password}, http.StatusOK, &l)
	if !strings.HasPrefix(l.Token, "avo_") {
		s.t.Fatalf("login %s: token %q does not start with avo_", name, l.Token)
	}
	return l
}

// loginWithCookie logs in and also returns the login cookie's value
// (a secret of its own, not the token).
func (s *server) loginWithCookie(name, password string) (apiwire.Login, string) {
	s.t.Helper()
	r := s.call(cred{}, "POST", "/api/v1/login", apiwire.LoginRequest{Name: name, Password: password})
	var l apiwire.Login
	if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &l) != nil {
		s.t.Fatalf("login %s: %s", name, r)
	}
	for _, c := range r.resp.Cookies() {
		if c.Name == loginCookie {
			return l, c.Value
		}
	}
	s.t.Fatalf("login %s set no %s cookie", name, loginCookie)
	return l, ""
}

// mintSession opens a session with the given credential.
func (s *server) mintSession(c cred, req apiwire.SessionRequest) apiwire.Session {
	s.t.Helper()
	var out apiwire.Session
	s.must(c, "POST", "/api/v1/sessions", req, http.StatusCreated, &out)
	if out.ID == "" || !strings.HasPrefix(out.Token, "avs_") {
		s.t.Fatalf("session without id or avs_ token: %+v", out)
	}
	return out
}

// asSession is an apiwire.Session as the older helpers' session type.
func asSession(a apiwire.Session) session {
	return session{ID: a.ID, Token: a.Token, ProxyURL: a.ProxyURL, CAPEM: a.CAPEM, ExpiresAt: a.ExpiresAt, Placeholders: a.Placeholders}
}

// sessionList is GET /api/v1/sessions with the admin token.
func (s *server) sessionList() []apiwire.SessionInfo {
	s.t.Helper()
	var l apiwire.SessionList
	s.must(s.admin(), "GET", "/api/v1/sessions", nil, http.StatusOK, &l)
	return l.Sessions
}

// sessionInfo finds one session in GET /api/v1/sessions.
func (s *server) sessionInfo(id string) (apiwire.SessionInfo, bool) {
	s.t.Helper()
	for _, se := range s.sessionList() {
		if se.ID == id {
			return se, true
		}
	}
	return apiwire.SessionInfo{}, false
}

// auditPage is one GET /api/v1/audit?query.
func (s *server) auditPage(c cred, query url.Values) apiwire.AuditList {
	s.t.Helper()
	var l apiwire.AuditList
	s.must(c, "GET", "/api/v1/audit?"+query.Encode(), nil, http.StatusOK, &l)
	return l
}

// auditAll pages through GET /api/v1/audit?query with the admin token,
// following next_before, and returns every entry and the raw bodies.
func (s *server) auditAll(query url.Values) ([]apiwire.AuditEntry, string) {
	s.t.Helper()
	var all []apiwire.AuditEntry
	var raw strings.Builder
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	for page := 0; ; page++ {
		if page > 1000 {
			s.t.Fatal("GET /api/v1/audit: more than 1000 pages; next_before does not advance")
		}
		r := s.must(s.admin(), "GET", "/api/v1/audit?"+q.Encode(), nil, http.StatusOK, nil)
		raw.WriteString(r.body)
		var l apiwire.AuditList
		if err := json.Unmarshal([]byte(r.body), &l); err != nil {
			s.t.Fatalf("audit page: %v: %s", err, r.body)
		}
		all = append(all, l.Entries...)
		if l.NextBefore == "" {
			return all, raw.String()
		}
		q.Set("before", l.NextBefore)
	}
}

// findAudit returns the entries matching action and target (target ""
// matches any).
func findAudit(entries []apiwire.AuditEntry, action, target string) []apiwire.AuditEntry {
	var out []apiwire.AuditEntry
	for _, e := range entries {
		if e.Action == action && (target == "" || e.Target == target) {
			out = append(out, e)
		}
	}
	return out
}

// poll calls cond until it holds or d has passed since now; it reports
// whether it held. The interval is short: the callers measure bounds.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(20 * time.Millisecond)
	}
}

// tokenBits is the number of secret bits after a token's prefix (up to
// and including the first '_'), read as unpadded base64url; 0 if it is
// not.
func tokenBits(token string) int {
	_, rest, ok := strings.Cut(token, "_")
	if !ok {
		return 0
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return 0
	}
	return 8 * len(b)
}

// launchRun is one finished av-launch.
type launchRun struct {
	stdout, stderr string
	code           int
}

func (l launchRun) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", l.code, l.stdout, l.stderr)
}

// launchEnv is the environment of an av-launch of these tests: PATH, a
// HOME of its own, and extra (AGENT_VAULT_TOKEN, AGENT_VAULT_DATA_DIR,
// TMPDIR...). It never holds the admin token unless extra does.
func launchEnv(t testing.TB, extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, extra...)
}

// runLaunch runs `av-launch --addr <api> args...` with env and waits.
func (s *server) runLaunch(env []string, args ...string) launchRun {
	s.t.Helper()
	cmd := exec.Command(bin("av-launch"), append([]string{"--addr", "http://" + s.apiAddr}, args...)...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		s.t.Fatalf("av-launch %v did not finish within 2 minutes:\n%s\n%s", args, o.String(), e.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return launchRun{stdout: o.String(), stderr: e.String(), code: code}
}

// processGone reports whether pid no longer runs: no /proc entry, or a
// zombie (dead, not yet reaped by whoever inherited it).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	st := s[i+2]
	return st == 'Z' || st == 'X'
}

// killProcess ends pid if it still runs (a test's leftover).
func killProcess(pid int) {
	if pid > 0 && !processGone(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// waitFile polls until path exists with non-empty content, and returns it.
func waitFile(t testing.TB, path string, d time.Duration) string {
	t.Helper()
	var content string
	if !poll(d, func() bool {
		b, err := os.ReadFile(path)
		content = string(b)
		return err == nil && strings.HasSuffix(content, "\n")
	}) {
		t.Fatalf("%s did not appear within %v", path, d)
	}
	return strings.TrimSpace(content)
}

// proxyToken extracts the session token from an HTTPS_PROXY value
// (http://av:<token>@host:port).
func proxyToken(t testing.TB, proxyURL string) string {
	t.Helper()
	u, err := url.Parse(strings.TrimSpace(proxyURL))
	if err != nil || u.User == nil {
		t.Fatalf("HTTPS_PROXY %q has no userinfo", proxyURL)
	}
	p, _ := u.User.Password()
	return p
}

// writeSecretFile writes content to a fresh 0600 file and returns its path.
func writeSecretFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// passthrough is a passthrough service definition for host.
func passthrough(host string) map[string]any {
	return map[string]any{"host": host, "auth": map[string]any{"type": "passthrough"}}
}

// bearerService is a bearer service definition for host using credential.
func bearerService(host, credential string) map[string]any {
	return map[string]any{"host": host, "auth": map[string]any{"type": "bearer", "token": credential}}
}

// assertNotOnDisk fails t if any regular file under dir holds secret.
func assertNotOnDisk(t testing.TB, dir, secret string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds a secret (%.8s...) in plaintext", p, secret)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
