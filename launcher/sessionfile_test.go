//go:build unix

package launcher

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

const testExternalToken = "avs_orchestrator-minted-session-token"

// externalSession is a session an orchestrator minted, as POST
// /api/v1/sessions answered it.
func externalSessionFor(api *fakeAPI) apiwire.Session {
	s := api.session
	s.ID, s.Token, s.LeaseTimeout = "sess_external", testExternalToken, ""
	return s
}

// runWithSessionFile runs Main with --session-token-file holding content;
// the child writes its environment to a file, whose parse it returns.
func runWithSessionFile(t *testing.T, api *fakeAPI, content string, env []string) (int, string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "session")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "env")
	env = append(append(baseEnv(), env...), "TMPDIR="+t.TempDir(), "GITHUB_TOKEN=ghp_real", "OUT_OF_SCOPE_TOKEN=real")
	var stderr strings.Builder
	code := Main([]string{"--addr", api.srv.URL, "--session-token-file", file, "/bin/sh", "-c", `env -0 > "$1"`, "sh", out}, env, nil, nil, &stderr)
	assertNoSecrets(t, "stderr", stderr.String())
	if strings.Contains(stderr.String(), testExternalToken) {
		t.Errorf("stderr leaks the session token: %q", stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return code, stderr.String(), nil
	}
	childEnv, _ := parseEnv0(t, data)
	return code, stderr.String(), childEnv
}

func proxyPassword(t *testing.T, proxy string) string {
	t.Helper()
	u, err := url.Parse(proxy)
	if err != nil || u.User == nil {
		t.Fatalf("proxy %q: %v", proxy, err)
	}
	pw, _ := u.User.Password()
	return pw
}

// noSessionChanges fails if the launcher created, renewed or revoked a
// session.
func noSessionChanges(t *testing.T, api *fakeAPI) {
	t.Helper()
	for _, r := range api.allRequests() {
		if strings.HasPrefix(r, "POST ") || strings.HasPrefix(r, "DELETE ") {
			t.Errorf("%s sent with --session-token-file", r)
		}
	}
}

func TestMainSessionTokenFileJSON(t *testing.T) {
	api := newFakeAPI(t)
	data, err := json.MarshalIndent(externalSessionFor(api), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	// No AGENT_VAULT_TOKEN: the sandbox holds only its session.
	code, stderr, env := runWithSessionFile(t, api, string(data)+"\n", nil)
	if code != 0 || env == nil {
		t.Fatalf("Main = %d; stderr: %s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want nothing", stderr)
	}
	if pw := proxyPassword(t, env["HTTPS_PROXY"]); pw != testExternalToken {
		t.Errorf("proxy password = %q, want the external session's token", pw)
	}
	if env["GITHUB_TOKEN"] != testPlaceholder {
		t.Errorf("GITHUB_TOKEN = %q, want the placeholder", env["GITHUB_TOKEN"])
	}
	if reqs := api.allRequests(); len(reqs) != 0 {
		t.Errorf("requests = %q, want none: the JSON holds everything", reqs)
	}
}

func TestMainSessionTokenFileBareToken(t *testing.T) {
	api := newFakeAPI(t)
	sess := externalSessionFor(api)
	api.set(func(f *fakeAPI) { f.current = &sess })
	// GET /api/v1/session names every credential: all are kept out,
	// with no API token (an AGENT_VAULT_TOKEN around is not used).
	code, stderr, env := runWithSessionFile(t, api, " "+testExternalToken+"\n", []string{"AGENT_VAULT_TOKEN=" + testAdminToken})
	if code != 0 || env == nil {
		t.Fatalf("Main = %d; stderr: %s", code, stderr)
	}
	if pw := proxyPassword(t, env["HTTPS_PROXY"]); pw != testExternalToken {
		t.Errorf("proxy password = %q, want the session token", pw)
	}
	if env["GITHUB_TOKEN"] != testPlaceholder {
		t.Errorf("GITHUB_TOKEN = %q", env["GITHUB_TOKEN"])
	}
	if _, ok := env["OUT_OF_SCOPE_TOKEN"]; ok {
		t.Error("OUT_OF_SCOPE_TOKEN reached the child")
	}
	noSessionChanges(t, api)
	api.mu.Lock()
	auths := slices.Clone(api.currentAuths)
	api.mu.Unlock()
	if !slices.Equal(auths, []string{"Bearer " + testExternalToken}) {
		t.Errorf("GET /api/v1/session auths = %q, want the session token once", auths)
	}
	if reqs := api.allRequests(); !slices.Equal(reqs, []string{"GET /api/v1/session"}) {
		t.Errorf("requests = %q, want GET /api/v1/session alone", reqs)
	}
}

func TestMainSessionTokenFileErrors(t *testing.T) {
	for name, tc := range map[string]struct{ content, want string }{
		"empty":          {" \n", "holds neither a session token (avs_...) nor the JSON answer of POST /api/v1/sessions"},
		"other token":    {testAdminToken, "holds neither a session token"},
		"two words":      {"avs_a avs_b", "holds neither a session token"},
		"bad json":       {`{"id":`, "holds JSON that is not a POST /api/v1/sessions answer"},
		"json no token":  {`{"id":"sess_1","proxy_url":"http://127.0.0.1:1"}`, "holds a session without its token"},
		"json bad token": {`{"id":"sess_1","token":"` + testAdminToken + `"}`, "whose token is not a session token"},
		"unknown token":  {"avs_unknown", "reading the session of the session token: 401 unknown or expired token"},
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t)
			code, stderr, env := runWithSessionFile(t, api, tc.content, nil)
			if code != ExitSetup || !strings.Contains(stderr, tc.want) {
				t.Errorf("Main = %d, stderr %q; want %d and %q", code, stderr, ExitSetup, tc.want)
			}
			if env != nil {
				t.Error("the child ran")
			}
			if strings.Contains(stderr, testAdminToken) {
				t.Errorf("the file's content is quoted: %q", stderr)
			}
			noSessionChanges(t, api)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		var stderr strings.Builder
		code := Main([]string{"--session-token-file", "/nonexistent/session", "true"}, baseEnv(), nil, nil, &stderr)
		if code != ExitSetup || !strings.Contains(stderr.String(), "session token file /nonexistent/session is not readable (no such file or directory)") {
			t.Errorf("Main = %d, stderr %q", code, stderr.String())
		}
	})
}

// An agent token may not list credentials (403), yet every name the
// server knows is kept from the child: the session's answer lists them
// (credential_names), and GET /api/v1/credentials is never asked.
func TestRunDropsEveryCredentialName(t *testing.T) {
	api := newFakeAPI(t)
	out := filepath.Join(t.TempDir(), "env")
	env := append(baseEnv(), "GITHUB_TOKEN=ghp_real_secret_value", "OUT_OF_SCOPE_TOKEN=inherited-real-value", "UNRELATED=kept")
	code, stderr, err := launch(t, api, Config{Env: env, Command: []string{"/bin/sh", "-c", `env -0 > "$1"`, "sh", out}})
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; stderr %s", code, err, stderr)
	}
	data, _ := os.ReadFile(out)
	childEnv, _ := parseEnv0(t, data)
	if childEnv["GITHUB_TOKEN"] != testPlaceholder {
		t.Errorf("GITHUB_TOKEN = %q, want the placeholder", childEnv["GITHUB_TOKEN"])
	}
	if v, ok := childEnv["OUT_OF_SCOPE_TOKEN"]; ok {
		t.Errorf("OUT_OF_SCOPE_TOKEN = %q reached the child: credential_names must keep it out", v)
	}
	if childEnv["UNRELATED"] != "kept" {
		t.Errorf("UNRELATED = %q", childEnv["UNRELATED"])
	}
	if reqs := api.allRequests(); slices.Contains(reqs, "GET /api/v1/credentials") {
		t.Errorf("requests = %q: credentials listed", reqs)
	}
}

// A service the server does not know is its 400: exit 2, nothing
// started, nothing left behind.
func TestRunUnknownService(t *testing.T) {
	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) { f.createStatus, f.createError = http.StatusBadRequest, `unknown service "nope"` })
	tmp := t.TempDir()
	marker := filepath.Join(t.TempDir(), "started")
	code, _, err := launch(t, api, Config{TempDir: tmp, Services: []string{"github", "nope"}, Command: []string{"/bin/sh", "-c", `touch "$1"`, "sh", marker}})
	if code != ExitSetup || err == nil || err.Error() != `creating session: 400 unknown service "nope"` {
		t.Errorf("Run = %d, %v", code, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the child ran")
	}
	if reqs := api.allRequests(); !slices.Equal(reqs, []string{"POST /api/v1/sessions"}) {
		t.Errorf("requests = %q, want the refused POST only", reqs)
	}
	assertEmptyDir(t, tmp)
}

// A FIFO (or anything but a regular file) is refused before it is
// opened, so it cannot hang av-launch; "-" reads the session from stdin
// instead, so it need not touch disk.
func TestMainSessionTokenFileFIFOAndStdin(t *testing.T) {
	api := newFakeAPI(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan mainRun, 1)
	go func() { done <- runMain(t, api, nil, "--addr", api.srv.URL, "--session-token-file", fifo) }()
	select {
	case r := <-done:
		if r.code != ExitSetup || r.ran || !strings.Contains(r.stderr, "session token file "+fifo+" is not readable (not a regular file)") {
			t.Errorf("FIFO: exit %d, stderr %q", r.code, r.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("av-launch hung on a FIFO session file")
	}

	data, err := json.Marshal(externalSessionFor(api))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "env")
	var stderr strings.Builder
	code := Main([]string{"--addr", api.srv.URL, "--session-token-file", "-", "/bin/sh", "-c", `env -0 > "$1"`, "sh", out},
		append(baseEnv(), "TMPDIR="+t.TempDir(), "OUT_OF_SCOPE_TOKEN=real"), strings.NewReader(string(data)), nil, &stderr)
	if code != 0 {
		t.Fatalf("--session-token-file -: exit %d, stderr %s", code, stderr.String())
	}
	got, _ := os.ReadFile(out)
	env, _ := parseEnv0(t, got)
	if pw := proxyPassword(t, env["HTTPS_PROXY"]); pw != testExternalToken {
		t.Errorf("proxy password = %q, want the session's token from stdin", pw)
	}
	if _, ok := env["OUT_OF_SCOPE_TOKEN"]; ok {
		t.Error("OUT_OF_SCOPE_TOKEN reached the child: the answer's credential_names must keep it out")
	}
	noSessionChanges(t, api)

	stderr.Reset()
	big := strings.NewReader(testExternalToken + strings.Repeat(" ", maxSessionFileBytes))
	code = Main([]string{"--addr", api.srv.URL, "--session-token-file", "-", "true"}, baseEnv(), big, nil, &stderr)
	if code != ExitSetup || !strings.Contains(stderr.String(), "session token on stdin is not readable (larger than 1048576 bytes)") {
		t.Errorf("big stdin: exit %d, stderr %q", code, stderr.String())
	}
}

// A session file others may read is used, with a warning.
func TestMainSessionTokenFileShared(t *testing.T) {
	api := newFakeAPI(t)
	data, _ := json.Marshal(externalSessionFor(api))
	f := filepath.Join(t.TempDir(), "session")
	os.WriteFile(f, data, 0o644)
	os.Chmod(f, 0o644)
	r := runMain(t, api, nil, "--addr", api.srv.URL, "--session-token-file", f)
	if r.code != 0 || !r.ran || !strings.Contains(r.stderr, "av-launch: warning: "+f+" is accessible by others (mode 0644)") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
