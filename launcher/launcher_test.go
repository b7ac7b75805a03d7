//go:build unix

package launcher

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/agentvault/caddy-agent-vault/caddymodule/apiwire"
)

// caVars are all variables that must point at a file holding our CA.
var caVars = append(slices.Clone(caBundleVars), nodeCAVar)

// dumpScript writes the child's environment to $1 and, for every CA
// variable, a copy of the file it names and that file's mode to $2.
var dumpScript = `env -0 > "$1"
for v in ` + strings.Join(caVars, " ") + " " + wgetrcVar + `; do
	eval f=\$$v
	cp "$f" "$2/$v"
	ls -l "$f" | cut -c1-10 > "$2/$v.mode"
done`

func TestRunChildEnvironment(t *testing.T) {
	api := newFakeAPI(t)
	systemCA := newTestCert(t, "pretend system root")
	outDir := t.TempDir()
	sysFile := filepath.Join(outDir, "system.pem")
	if err := os.WriteFile(sysFile, []byte(systemCA), 0o644); err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(outDir, "env")
	tmp := t.TempDir()
	parent := append(baseEnv(),
		"KEEP_ME=1",
		"GITHUB_TOKEN=ghp_real_secret_value",
		"OUT_OF_SCOPE_TOKEN=real-value-of-a-credential-outside-the-scope",
		"AGENT_VAULT_DATA_DIR=/where/the/admin/token/lives",
		"VAULT_TOKEN=hvs.the-broker-own-vault-token",
		"INFISICAL_CLIENT_SECRET=the-broker-own-infisical-secret",
		"github_token=lowercase-is-another-variable",
		"AGENT_VAULT_TOKEN="+testAdminToken,
		"AGENT_VAULT_ADMIN_TOKEN="+testAdminToken,
		"AGENT_VAULT_MASTER_PASSWORD=hunter2",
		"AGENT_VAULT_MASTER_PASSWORD_FILE=/secret/pw",
		"HTTPS_PROXY=http://outer.invalid:1",
		"https_proxy=http://outer.invalid:1",
		"HTTP_PROXY=http://outer.invalid:1",
		"http_proxy=http://outer.invalid:1",
		"ALL_PROXY=socks5://outer.invalid:1",
		"all_proxy=socks5://outer.invalid:1",
		"NO_PROXY=*",
		"no_proxy=*",
		"SSL_CERT_FILE="+sysFile,
		"NODE_EXTRA_CA_CERTS=/outer/ca.pem",
		"CURL_CA_BUNDLE=/outer/ca.pem",
		// The machine's own settings, pointing at a bundle without our CA.
		"PIP_CERT=/outer/ca.pem",
		"AWS_CA_BUNDLE=/outer/ca.pem",
		"NIX_SSL_CERT_FILE=/outer/ca.pem",
		"HTTPLIB2_CA_CERTS=/outer/ca.pem",
		"NPM_CONFIG_CAFILE=/outer/ca.pem", // npm reads any case
		"npm_config_ca=inline-pem",
		"NPM_CONFIG_HTTPS_PROXY=http://outer.invalid:1",
		"npm_config_registry=https://registry.example",
		"WGETRC=/nonexistent/wgetrc",
	)
	code, stderr, err := launch(t, api, Config{
		Env:     parent,
		TempDir: tmp,
		Command: []string{"/bin/sh", "-c", dumpScript, "sh", envFile, outDir},
	})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v; stderr: %s", code, err, stderr)
	}

	data, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env, names := parseEnv0(t, data)

	for _, name := range proxyVars {
		u, err := url.Parse(env[name])
		if err != nil {
			t.Fatalf("%s=%q: %v", name, env[name], err)
		}
		password, _ := u.User.Password()
		if u.User.Username() != "av" || password != testSessionToken || u.Host != "127.0.0.1:14322" || u.Scheme != "http" {
			t.Errorf("%s does not carry the session credentials: user %q host %q", name, u.User.Username(), u.Host)
		}
	}
	for _, name := range noProxyVars {
		if env[name] != api.hostPort(t) {
			t.Errorf("%s = %q, want %q", name, env[name], api.hostPort(t))
		}
	}
	want := map[string]string{
		"NODE_USE_ENV_PROXY": "1",
		"GITHUB_TOKEN":       testPlaceholder,
		"github_token":       "lowercase-is-another-variable",
		"KEEP_ME":            "1",
	}
	for name, value := range want {
		if env[name] != value {
			t.Errorf("%s = %q, want %q", name, env[name], value)
		}
	}
	for _, name := range slices.Concat(clientProxyVars, []string{"npm_config_https_proxy"}) {
		if env[name] != env["HTTPS_PROXY"] {
			t.Errorf("%s = %q, want the proxy URL", name, env[name])
		}
	}
	if env["npm_config_noproxy"] != api.hostPort(t) {
		t.Errorf("npm_config_noproxy = %q", env["npm_config_noproxy"])
	}
	if env["npm_config_registry"] != "https://registry.example" {
		t.Errorf("an npm setting the launcher does not manage was dropped: %q", env["npm_config_registry"])
	}
	wgetrc, err := os.ReadFile(filepath.Join(outDir, wgetrcVar))
	if err != nil {
		t.Fatal(err)
	}
	if want := "ca_certificate = " + env["SSL_CERT_FILE"] + "\n"; !strings.Contains(string(wgetrc), want) {
		t.Errorf("WGETRC lacks %q:\n%s", want, wgetrc)
	}
	if mode, _ := os.ReadFile(filepath.Join(outDir, wgetrcVar+".mode")); strings.TrimSpace(string(mode)) != "-rw-------" {
		t.Errorf("WGETRC mode = %q", mode)
	}
	if filepath.Dir(env[wgetrcVar]) != tmp {
		t.Errorf("WGETRC = %q, not in the temp dir", env[wgetrcVar])
	}
	for _, name := range append(slices.Clone(secretVars), "NPM_CONFIG_CAFILE", "npm_config_ca", "NPM_CONFIG_HTTPS_PROXY", "ALL_PROXY", "all_proxy", "OUT_OF_SCOPE_TOKEN", "AGENT_VAULT_DATA_DIR", "VAULT_TOKEN", "INFISICAL_CLIENT_SECRET") {
		if _, ok := env[name]; ok {
			t.Errorf("%s reached the child", name)
		}
	}
	for name, value := range env {
		if strings.Contains(value, testAdminToken) || strings.Contains(value, "ghp_real_secret_value") {
			t.Errorf("%s carries a secret", name)
		}
	}
	for _, name := range reservedVars {
		if n := countOf(names, name); n > 1 {
			t.Errorf("%s set %d times", name, n)
		}
	}

	for _, name := range caVars {
		path := env[name]
		if filepath.Dir(path) != tmp {
			t.Errorf("%s = %q, not in the temp dir %s", name, path, tmp)
		}
		mode, _ := os.ReadFile(filepath.Join(outDir, name+".mode"))
		if got := strings.TrimSpace(string(mode)); got != "-rw-------" {
			t.Errorf("%s mode = %q, want -rw-------", name, got)
		}
		content, err := os.ReadFile(filepath.Join(outDir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(string(content), api.caPEM) {
			t.Errorf("%s does not hold the session CA", name)
		}
		wantSystem := name != nodeCAVar
		if got := strings.Contains(string(content), systemCA); got != wantSystem {
			t.Errorf("%s holds the system roots: %v, want %v", name, got, wantSystem)
		}
	}
	if env["SSL_CERT_FILE"] == env[nodeCAVar] {
		t.Error("NODE_EXTRA_CA_CERTS should be the CA-only file")
	}

	creates, deletes := api.calls()
	if len(creates) != 1 || creates[0].auth != "Bearer "+testAdminToken {
		t.Errorf("creates = %+v", creates)
	}
	if !slices.Equal(deletes, []string{testSessionID}) {
		t.Errorf("deletes = %q, want [%s]", deletes, testSessionID)
	}
	assertEmptyDir(t, tmp)
}

func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

func TestMainFlagsAndArgv(t *testing.T) {
	api := newFakeAPI(t)
	out := filepath.Join(t.TempDir(), "argv")
	env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken, "AGENT_VAULT_ADDR=http://127.0.0.1:1")
	argv := []string{"/bin/sh", "-c", `printf '%s\n' "$0" "$@" > "$1"`, "sh", out, "--ttl", "1s", "--services", "x", "--", "-h"}
	args := append([]string{"--addr", api.srv.URL, "--services", " github, openai ", "--ttl", "90m", "--"}, argv...)

	var stdout, stderr strings.Builder
	if code := Main(args, env, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("Main = %d; stderr: %s", code, stderr.String())
	}
	creates, _ := api.calls()
	if len(creates) != 1 {
		t.Fatalf("creates = %d, want 1 (--addr must win over AGENT_VAULT_ADDR)", len(creates))
	}
	if got := creates[0].body; !slices.Equal(got.Services, []string{"github", "openai"}) || got.TTL != "1h30m" {
		t.Errorf("request = %+v, want services [github openai] ttl 1h30m", got)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// The child's $0 and arguments, exactly as given after "--".
	if got, want := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"), argv[3:]; !slices.Equal(got, want) {
		t.Errorf("child argv = %q, want %q", got, want)
	}
	assertNoSecrets(t, "child argv", string(data))
	assertNoSecrets(t, "stderr", stderr.String())
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
}

func TestMainDefaultsOmitServices(t *testing.T) {
	api := newFakeAPI(t)
	env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken, "AGENT_VAULT_ADDR="+api.srv.URL)
	var stderr strings.Builder
	if code := Main([]string{"/bin/sh", "-c", "exit 0"}, env, nil, nil, &stderr); code != 0 {
		t.Fatalf("Main = %d; stderr: %s", code, stderr.String())
	}
	creates, _ := api.calls()
	if len(creates) != 1 {
		t.Fatalf("creates = %d, want 1 (AGENT_VAULT_ADDR must be used)", len(creates))
	}
	if _, ok := creates[0].raw["services"]; ok {
		t.Errorf("services sent although empty: %v", creates[0].raw)
	}
	// No --ttl: the server's default, which it caps to an agent's maximum
	// (a fixed 1h would be refused for an agent allowed less).
	if ttl, ok := creates[0].raw["ttl"]; ok && ttl != "" {
		t.Errorf("ttl = %v, want the server's default", ttl)
	}
}

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -TERM $$", 128 + int(syscall.SIGTERM)},
		{"kill -KILL $$", 128 + int(syscall.SIGKILL)},
	} {
		t.Run(tc.script, func(t *testing.T) {
			api := newFakeAPI(t)
			tmp := t.TempDir()
			code, stderr, err := launch(t, api, Config{TempDir: tmp, Command: []string{"/bin/sh", "-c", tc.script}})
			if err != nil || code != tc.want {
				t.Fatalf("Run = %d, %v, want %d; stderr: %s", code, err, tc.want, stderr)
			}
			if _, deletes := api.calls(); !slices.Equal(deletes, []string{testSessionID}) {
				t.Errorf("deletes = %q", deletes)
			}
			assertEmptyDir(t, tmp)
		})
	}
}

func TestMainAPIError(t *testing.T) {
	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) { f.createStatus, f.createError = http.StatusForbidden, "bad token" })
	marker := filepath.Join(t.TempDir(), "started")
	env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken)
	var stderr strings.Builder
	code := Main([]string{"--addr", api.srv.URL, "/bin/sh", "-c", `touch "$1"`, "sh", marker}, env, nil, nil, &stderr)
	if code != ExitSetup {
		t.Errorf("Main = %d, want %d", code, ExitSetup)
	}
	if got, want := stderr.String(), "av-launch: creating session: 403 bad token\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("child ran although the session was refused")
	}
	if _, deletes := api.calls(); len(deletes) != 0 {
		t.Errorf("deletes = %q, want none", deletes)
	}
}

func TestAPIErrorRedactsAdminToken(t *testing.T) {
	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) {
		f.createStatus, f.createError = http.StatusUnauthorized, "token "+testAdminToken+" \x1b[31mis unknown"
	})
	code, _, err := launch(t, api, Config{Command: []string{"/bin/sh", "-c", "exit 0"}})
	if code != ExitSetup || err == nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if want := "creating session: 401 token [redacted] [31mis unknown"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestRunCommandNotFound(t *testing.T) {
	t.Run("in PATH", func(t *testing.T) {
		api := newFakeAPI(t)
		code, _, err := launch(t, api, Config{Command: []string{"no-such-command-av-launch"}})
		if code != ExitNotFound || err == nil || err.Error() != "no-such-command-av-launch: not found" {
			t.Errorf("Run = %d, %v", code, err)
		}
		if creates, _ := api.calls(); len(creates) != 0 {
			t.Error("a session was created for a command that does not exist")
		}
	})
	t.Run("path", func(t *testing.T) {
		// Found only when starting: the session exists and must be revoked.
		api := newFakeAPI(t)
		tmp := t.TempDir()
		missing := filepath.Join(t.TempDir(), "missing")
		code, _, err := launch(t, api, Config{TempDir: tmp, Command: []string{missing}})
		if code != ExitNotFound || err == nil || err.Error() != missing+": not found" {
			t.Errorf("Run = %d, %v", code, err)
		}
		if _, deletes := api.calls(); !slices.Equal(deletes, []string{testSessionID}) {
			t.Errorf("deletes = %q, want the session revoked", deletes)
		}
		assertEmptyDir(t, tmp)
	})
	t.Run("Main message", func(t *testing.T) {
		var stderr strings.Builder
		env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken)
		code := Main([]string{"--addr", newFakeAPI(t).srv.URL, "no-such-command-av-launch"}, env, nil, nil, &stderr)
		if code != ExitNotFound || stderr.String() != "av-launch: no-such-command-av-launch: not found\n" {
			t.Errorf("Main = %d, stderr %q", code, stderr.String())
		}
	})
}

func TestRunInvalidSessionIsRevoked(t *testing.T) {
	for name, spoil := range map[string]func(*apiwire.Session){
		"CA not PEM":           func(s *apiwire.Session) { s.CAPEM = "not a certificate" },
		"CA with private key":  func(s *apiwire.Session) { s.CAPEM += "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" },
		"CA garbage cert":      func(s *apiwire.Session) { s.CAPEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" },
		"reserved placeholder": func(s *apiwire.Session) { s.Placeholders["HTTPS_PROXY"] = "x" },
		"bad placeholder name": func(s *apiwire.Session) { s.Placeholders["A=B"] = "x" },
		"bad proxy URL":        func(s *apiwire.Session) { s.ProxyURL = "socks5://127.0.0.1:1" },
		"empty token":          func(s *apiwire.Session) { s.Token = "" },
		"bad lease timeout":    func(s *apiwire.Session) { s.LeaseTimeout = "soon" },
		"zero lease timeout":   func(s *apiwire.Session) { s.LeaseTimeout = "0s" },
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.set(func(f *fakeAPI) { spoil(&f.session) })
			tmp := t.TempDir()
			marker := filepath.Join(t.TempDir(), "started")
			code, _, err := launch(t, api, Config{TempDir: tmp, Command: []string{"/bin/sh", "-c", `touch "$1"`, "sh", marker}})
			if code != ExitSetup || err == nil {
				t.Fatalf("Run = %d, %v, want %d and an error", code, err, ExitSetup)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("child ran with an invalid session")
			}
			if _, deletes := api.calls(); !slices.Equal(deletes, []string{testSessionID}) {
				t.Errorf("deletes = %q, want the session revoked", deletes)
			}
			assertEmptyDir(t, tmp)
		})
	}
}

// An answer that does not decode still names a session the server made:
// it must be revoked, and the child must not run.
func TestRunMalformedSessionIsRevoked(t *testing.T) {
	for name, body := range map[string]string{
		"expires_at not a time": `{"id":"` + testSessionID + `","expires_at":"soon"}`,
		"placeholders a list":   `{"id":"` + testSessionID + `","placeholders":["x"]}`,
		"token a number":        `{"id":"` + testSessionID + `","token":7}`,
	} {
		t.Run(name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.set(func(f *fakeAPI) { f.createBody = body })
			marker := filepath.Join(t.TempDir(), "started")
			code, _, err := launch(t, api, Config{Command: []string{"/bin/sh", "-c", `touch "$1"`, "sh", marker}})
			if code != ExitSetup || err == nil || !strings.Contains(err.Error(), "malformed response") {
				t.Fatalf("Run = %d, %v, want %d and a malformed response", code, err, ExitSetup)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("child ran with a malformed session")
			}
			if _, deletes := api.calls(); !slices.Equal(deletes, []string{testSessionID}) {
				t.Errorf("deletes = %q, want the session revoked", deletes)
			}
		})
	}
}

func TestRunInvalidSessionID(t *testing.T) {
	api := newFakeAPI(t)
	api.set(func(f *fakeAPI) { f.session.ID = "../../admin" })
	code, _, err := launch(t, api, Config{Command: []string{"/bin/sh", "-c", "exit 0"}})
	if code != ExitSetup || err == nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if _, deletes := api.calls(); len(deletes) != 0 {
		t.Errorf("DELETE sent for an unsafe id: %q", deletes)
	}
}

func TestRunRevokeFailureKeepsExitCode(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusNotFound} {
		api := newFakeAPI(t)
		api.set(func(f *fakeAPI) { f.deleteStatus = status })
		code, stderr, err := launch(t, api, Config{Command: []string{"/bin/sh", "-c", "exit 5"}})
		if code != 5 || err != nil {
			t.Errorf("status %d: Run = %d, %v, want 5", status, code, err)
		}
		warned := strings.Contains(stderr, "warning: revoking session: 500 boom")
		if warned != (status == http.StatusInternalServerError) {
			t.Errorf("status %d: stderr = %q", status, stderr)
		}
	}
}

func TestRunWithoutSystemRoots(t *testing.T) {
	saved := systemBundlePaths
	systemBundlePaths = []string{filepath.Join(t.TempDir(), "none.pem")}
	t.Cleanup(func() { systemBundlePaths = saved })

	api := newFakeAPI(t)
	out := filepath.Join(t.TempDir(), "bundle")
	env := append(baseEnv(), "SSL_CERT_FILE=/nonexistent/bundle.pem")
	code, stderr, err := launch(t, api, Config{Env: env, Command: []string{"/bin/sh", "-c", `cp "$SSL_CERT_FILE" "$1"`, "sh", out}})
	if code != 0 || err != nil {
		t.Fatalf("Run = %d, %v; stderr: %s", code, err, stderr)
	}
	if !strings.Contains(stderr, "no system CA bundle found") {
		t.Errorf("no warning: %q", stderr)
	}
	data, _ := os.ReadFile(out)
	if string(data) != api.caPEM {
		t.Errorf("bundle = %q, want only the session CA", data)
	}
}

func TestRunContextCancelTerminatesChild(t *testing.T) {
	api := newFakeAPI(t)
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	script := `trap 'exit 7' TERM; : > "$1"; while :; do sleep 1 >/dev/null 2>&1 & wait $!; done`
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		waitForFile(t, ready)
		cancel()
	}()
	code, err := Run(ctx, Config{
		Addr:    api.srv.URL,
		Token:   testAdminToken,
		Env:     baseEnv(),
		TempDir: t.TempDir(),
		Command: []string{"/bin/sh", "-c", script, "sh", ready},
	})
	if code != 7 || err != nil {
		t.Errorf("Run = %d, %v, want 7", code, err)
	}
	if _, deletes := api.calls(); len(deletes) != 1 {
		t.Errorf("deletes = %q, want the session revoked despite the cancelled context", deletes)
	}
}

func TestRunSetupErrors(t *testing.T) {
	api := newFakeAPI(t)
	for name, cfg := range map[string]Config{
		"no command":   {Addr: api.srv.URL, Token: "x"},
		"no token":     {Addr: api.srv.URL, Command: []string{"true"}},
		"bad addr":     {Addr: "ftp://127.0.0.1:1", Token: "x", Command: []string{"true"}},
		"addr userinf": {Addr: "http://u:p@127.0.0.1:1", Token: "x", Command: []string{"true"}},
		"negative ttl": {Addr: api.srv.URL, Token: "x", TTL: -1, Command: []string{"true"}},
		"no services":  {Addr: api.srv.URL, Token: "x", Services: []string{}, Command: []string{"true"}},
		"empty name":   {Addr: api.srv.URL, Token: "x", Services: []string{"a", " "}, Command: []string{"true"}},
	} {
		if code, err := Run(context.Background(), cfg); code != ExitSetup || err == nil {
			t.Errorf("%s: Run = %d, %v", name, code, err)
		}
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Errorf("setup errors reached the API: %d calls", len(creates))
	}
}

func TestResolveCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("tool", 0o755)
	write("plain", 0o644)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}

	if path, _, err := resolveCommand("tool", "relative/dir:"+dir); err != nil || path != filepath.Join(dir, "tool") {
		t.Errorf("tool: %q, %v", path, err)
	}
	if _, code, err := resolveCommand("plain", dir); code != ExitCannotExecute || err == nil {
		t.Errorf("plain: %d, %v", code, err)
	}
	for _, name := range []string{"adir", "missing"} {
		if _, code, err := resolveCommand(name, dir); code != ExitNotFound || err == nil {
			t.Errorf("%s: %d, %v", name, code, err)
		}
	}
	// Relative PATH entries (including the empty one meaning ".") are skipped.
	t.Chdir(dir)
	for _, path := range []string{".", "", ":/nonexistent"} {
		if _, code, _ := resolveCommand("tool", path); code != ExitNotFound {
			t.Errorf("PATH %q: found a command through a relative entry", path)
		}
	}
	if path, _, err := resolveCommand("./tool", ""); err != nil || path != "./tool" {
		t.Errorf("./tool: %q, %v", path, err)
	}
}

func TestRelayInterruptBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relay := &signalRelay{cancelSetup: cancel}
	relay.handle(syscall.SIGINT)
	relay.handle(syscall.SIGTERM) // the first signal is the one reported
	if ctx.Err() == nil {
		t.Error("setup context not cancelled")
	}
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	sig, err := relay.start(context.Background(), func() (*os.Process, error) {
		err := cmd.Start()
		return cmd.Process, err
	})
	if sig != syscall.SIGINT || err != nil {
		t.Errorf("start = %v, %v, want SIGINT", sig, err)
	}
	if cmd.Process != nil {
		t.Error("child started after an interrupt")
	}
	if got := relay.interrupted(); got != syscall.SIGINT {
		t.Errorf("interrupted = %v", got)
	}
}
