//go:build unix

package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDefaultDataDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, tc := range []struct {
		dataDir, xdg, want string
	}{
		{"/custom/dir", "/xdg", "/custom/dir"},
		{"", "/xdg", "/xdg/agent-vault"},
		{"", "relative/xdg", filepath.Join(home, ".local", "share", "agent-vault")},
		{"", "", filepath.Join(home, ".local", "share", "agent-vault")},
	} {
		t.Setenv("AGENT_VAULT_DATA_DIR", tc.dataDir)
		t.Setenv("XDG_DATA_HOME", tc.xdg)
		if got := dataDir(os.Getenv, os.UserHomeDir); got != tc.want {
			t.Errorf("dataDir(data=%q xdg=%q) = %q, want %q", tc.dataDir, tc.xdg, got, tc.want)
		}
	}
	noHome := func() (string, error) { return "", errors.New("no home") }
	if got := dataDir(func(string) string { return "" }, noHome); got != "" {
		t.Errorf("dataDir without home = %q, want empty", got)
	}
}

// mainRun is one run of Main against api with a child that records
// whether it ran.
type mainRun struct {
	code   int
	stderr string
	ran    bool
}

func runMain(t *testing.T, api *fakeAPI, env []string, args ...string) mainRun {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "ran")
	var stderr strings.Builder
	all := append(append([]string{}, args...), "/bin/sh", "-c", `touch "$1"`, "sh", marker)
	code := Main(all, append(baseEnv(), env...), nil, nil, &stderr)
	_, err := os.Stat(marker)
	assertNoSecrets(t, "stderr", stderr.String())
	return mainRun{code, stderr.String(), err == nil}
}

// authsOf lists the Authorization of every session the fake minted.
func authsOf(api *fakeAPI) []string {
	creates, _ := api.calls()
	var out []string
	for _, c := range creates {
		out = append(out, c.auth)
	}
	return out
}

// --token-file > AGENT_VAULT_TOKEN > the data dir's agent.token: the
// explicit flag wins over the ambient variable, with a warning; the
// same order as the agent-vault CLI.
func TestMainTokenPrecedence(t *testing.T) {
	api := newFakeAPI(t)
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "agent.token"), []byte("  from-data-dir\n"), 0o600)
	flagFile := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(flagFile, []byte("\tfrom-flag \r\n"), 0o600)
	xdg := t.TempDir()
	os.MkdirAll(filepath.Join(xdg, "agent-vault"), 0o700)
	os.WriteFile(filepath.Join(xdg, "agent-vault", "agent.token"), []byte("from-xdg"), 0o600)
	addr := "--addr=" + api.srv.URL
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
		warn bool
	}{
		{"flag beats env", []string{"AGENT_VAULT_TOKEN=from-env", "AGENT_VAULT_DATA_DIR=" + data}, []string{"--token-file", flagFile}, "from-flag", true},
		{"flag", []string{"AGENT_VAULT_DATA_DIR=" + data}, []string{"--token-file", flagFile}, "from-flag", false},
		{"env beats the data dir", []string{"AGENT_VAULT_TOKEN= from-env \n", "AGENT_VAULT_DATA_DIR=" + data}, nil, "from-env", false},
		{"data dir", []string{"AGENT_VAULT_DATA_DIR=" + data}, nil, "from-data-dir", false},
		{"xdg", []string{"XDG_DATA_HOME=" + xdg}, nil, "from-xdg", false},
		{"blank env falls back", []string{"AGENT_VAULT_TOKEN=  ", "AGENT_VAULT_DATA_DIR=" + data}, nil, "from-data-dir", false},
	} {
		before := len(authsOf(api))
		r := runMain(t, api, tc.env, append([]string{addr}, tc.args...)...)
		auths := authsOf(api)
		if r.code != 0 || !r.ran || len(auths) != before+1 || auths[before] != "Bearer "+tc.want {
			t.Errorf("%s: exit %d, ran %v, auths %q; want %q; stderr %s", tc.name, r.code, r.ran, auths[before:], tc.want, r.stderr)
		}
		const warning = "av-launch: warning: both --token-file and AGENT_VAULT_TOKEN are set: using --token-file"
		if strings.Contains(r.stderr, warning) != tc.warn {
			t.Errorf("%s: stderr %q, want the both-set warning: %v", tc.name, r.stderr, tc.warn)
		}
	}
}

// Given but empty (an unset variable) is a usage error, never the
// default; and a default token file is only sent to a loopback API.
func TestMainEmptyFlagsAndRemoteDefaults(t *testing.T) {
	api := newFakeAPI(t)
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "agent.token"), []byte(testAdminToken+"\n"), 0o600)
	env := []string{"AGENT_VAULT_DATA_DIR=" + data, "AGENT_VAULT_ADDR=" + api.srv.URL}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		says string
	}{
		{"empty --token-file", env, []string{"--token-file", ""}, "av-launch: --token-file is empty (an unset variable?)"},
		{"empty --token-file=", env, []string{"--token-file="}, "--token-file is empty"},
		{"empty --token-file, env set", append(env, "AGENT_VAULT_TOKEN="+testAdminToken), []string{"--token-file", ""}, "--token-file is empty"},
		{"empty --session-token-file", env, []string{"--session-token-file", ""}, "av-launch: --session-token-file is empty (an unset variable?)"},
		{"empty --addr", env, []string{"--addr", ""}, "av-launch: --addr is empty (an unset variable?)"},
		{"remote, default file", []string{"AGENT_VAULT_DATA_DIR=" + data}, []string{"--addr", "https://vault.example:14321"}, "no token: the management API https://vault.example:14321 is not on loopback, so the data dir's token file is not sent there by default: set AGENT_VAULT_TOKEN or pass --token-file"},
		{"remote http", []string{"AGENT_VAULT_TOKEN=" + testAdminToken}, []string{"--addr", "http://vault.example:14321/secret-path"}, `--addr "http://vault.example:14321" is plain http:// to a host that is not loopback: the token would cross the network in clear; use https://, or set AGENT_VAULT_INSECURE_HTTP=1`},
		{"token-file with a session file", env, []string{"--session-token-file", "/nonexistent", "--token-file", "/x"}, "--token-file does not apply with --session-token-file"},
	} {
		r := runMain(t, api, tc.env, tc.args...)
		if r.code != ExitSetup || r.ran || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%s: exit %d, ran %v, stderr %q; want %d and %q", tc.name, r.code, r.ran, r.stderr, ExitSetup, tc.says)
		}
		if strings.Contains(r.stderr, "secret-path") {
			t.Errorf("%s: the address's path is shown: %q", tc.name, r.stderr)
		}
	}
	if reqs := api.allRequests(); len(reqs) != 0 {
		t.Errorf("requests = %q, want none", reqs)
	}
	// AGENT_VAULT_INSECURE_HTTP=1 lets plain http:// through: the next
	// check speaks (no token for a remote API), before any I/O (tests
	// reach loopback only).
	r := runMain(t, api, []string{"AGENT_VAULT_DATA_DIR=" + data, "AGENT_VAULT_INSECURE_HTTP=1"}, "--addr", "http://vault.example:1")
	if r.code != ExitSetup || r.ran || strings.Contains(r.stderr, "plain http://") || !strings.Contains(r.stderr, "is not on loopback") {
		t.Errorf("AGENT_VAULT_INSECURE_HTTP=1: exit %d, stderr %q", r.code, r.stderr)
	}
}

// A token file others may read (or another user's) is used, with a
// warning, as ssh does.
func TestMainWarnsOfASharedTokenFile(t *testing.T) {
	api := newFakeAPI(t)
	f := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(f, []byte(testAdminToken+"\n"), 0o644)
	os.Chmod(f, 0o644)
	r := runMain(t, api, nil, "--addr", api.srv.URL, "--token-file", f)
	if r.code != 0 || !strings.Contains(r.stderr, "av-launch: warning: "+f+" is accessible by others (mode 0644): chmod 600 it") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// The flag package quotes what it refused; a secret typed in the wrong
// place (-pSecret, --ttl=<secret>) must not be echoed.
func TestMainFlagErrorsDoNotEcho(t *testing.T) {
	api := newFakeAPI(t)
	const secret = "hunter2SecretValue"
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"-p" + secret}, "flag provided but not defined (see -h)"},
		{[]string{"--" + secret + "=x"}, "flag provided but not defined (see -h)"},
		{[]string{"--ttl", secret}, "invalid value for flag -ttl (see -h)"},
		{[]string{"--ttl=" + secret}, "invalid value for flag -ttl (see -h)"},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
	} {
		r := runMain(t, api, []string{"AGENT_VAULT_TOKEN=" + testAdminToken}, tc.args...)
		if r.code != ExitSetup || r.ran || !strings.Contains(r.stderr, tc.says) || strings.Contains(r.stderr, secret) {
			t.Errorf("%q: exit %d, stderr %q; want %q and no echo", tc.args, r.code, r.stderr, tc.says)
		}
	}
}

func getenvFrom(env []string) func(string) string {
	return func(name string) string { return lookupEnv(env, name) }
}

func TestMainMissingToken(t *testing.T) {
	api := newFakeAPI(t)
	marker := filepath.Join(t.TempDir(), "started")
	env := append(baseEnv(), "AGENT_VAULT_DATA_DIR="+t.TempDir())
	var stderr strings.Builder
	code := Main([]string{"--addr", api.srv.URL, "/bin/sh", "-c", `touch "$1"`, "sh", marker}, env, nil, nil, &stderr)
	if code != ExitSetup {
		t.Errorf("Main = %d, want %d", code, ExitSetup)
	}
	if !strings.HasPrefix(stderr.String(), "av-launch: no token: AGENT_VAULT_TOKEN is unset and ") || !strings.Contains(stderr.String(), "make run") {
		t.Errorf("stderr = %q", stderr.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("child ran without a token")
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Error("API called without a token")
	}
}

func TestMainTokenFile(t *testing.T) {
	api := newFakeAPI(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(" "+testAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	code := Main([]string{"--addr", api.srv.URL, "--token-file", tokenFile, "/bin/sh", "-c", "exit 0"}, baseEnv(), nil, nil, &stderr)
	if code != 0 {
		t.Fatalf("Main = %d; stderr: %s", code, stderr.String())
	}
	if creates, _ := api.calls(); len(creates) != 1 || creates[0].auth != "Bearer "+testAdminToken {
		t.Errorf("creates = %+v", creates)
	}
}

func TestMainUsageErrors(t *testing.T) {
	api := newFakeAPI(t)
	env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken, "AGENT_VAULT_ADDR="+api.srv.URL)
	for _, tc := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{nil, ExitSetup, "no command given"},
		{[]string{"--"}, ExitSetup, "no command given"},
		{[]string{"--ttl", "soon", "true"}, ExitSetup, "invalid value"},
		{[]string{"--ttl", "0", "true"}, ExitSetup, "--ttl must be positive"},
		{[]string{"--bogus", "true"}, ExitSetup, "flag provided but not defined"},
		{[]string{"--addr", "127.0.0.1:14321", "true"}, ExitSetup, `av-launch: --addr "127.0.0.1:14321" has no scheme: use http://host:port`},
		{[]string{"--session-token-file", "/nonexistent", "--services", "a", "true"}, ExitSetup, "--services does not apply with --session-token-file"},
		{[]string{"--ttl", "5m", "--session-token-file", "/nonexistent", "true"}, ExitSetup, "--ttl does not apply with --session-token-file"},
		{[]string{"-h"}, 0, "usage: av-launch"},
	} {
		var stdout, stderr strings.Builder
		code := Main(tc.args, env, nil, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.inStderr) {
			t.Errorf("Main(%q) = %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.inStderr)
		}
		if stdout.Len() != 0 {
			t.Errorf("Main(%q) wrote to stdout: %q", tc.args, stdout.String())
		}
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Errorf("usage errors reached the API: %d calls", len(creates))
	}
}

// An explicitly empty --services (say, from an unset variable) is a usage
// error; only leaving the flag out means every service.
func TestMainEmptyServices(t *testing.T) {
	api := newFakeAPI(t)
	env := append(baseEnv(), "AGENT_VAULT_TOKEN="+testAdminToken, "AGENT_VAULT_ADDR="+api.srv.URL)
	marker := filepath.Join(t.TempDir(), "started")
	const none, hole = "names no service: name at least one, or omit --services for all services", "has an empty name"
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--services", ""}, none},
		{[]string{"--services="}, none},
		{[]string{"-services", " "}, none},
		{[]string{"--services", ","}, none},
		{[]string{"--services", " , ,\t"}, none},
		{[]string{"--services", "a,,b"}, `"a,,b" has an empty name (item 2)`},
		{[]string{"--services", "github,"}, hole},
		{[]string{"--services", "github", "--services", ""}, none}, // the last one counts
		// Not service names: refused here, before any request.
		{[]string{"--services", "*"}, `--services: "*" (item 1) is not a service name`},
		{[]string{"--services", "github,git hub"}, `"git hub" (item 2) is not a service name`},
		{[]string{"--services", "GitHub"}, `"GitHub" (item 1) is not a service name`},
		{[]string{"--services", "-x"}, "is not a service name"},
	} {
		var stderr strings.Builder
		args := append(tc.flags, "/bin/sh", "-c", `touch "$1"`, "sh", marker)
		code := Main(args, env, nil, nil, &stderr)
		if code != ExitSetup || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("Main(%q) = %d, stderr %q; want %d and %q", tc.flags, code, stderr.String(), ExitSetup, tc.want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("child ran with an empty --services")
	}
	if creates, _ := api.calls(); len(creates) != 0 {
		t.Errorf("an empty --services reached the API: %+v", creates)
	}
}

func TestMainNamed(t *testing.T) {
	var stderr strings.Builder
	env := append(baseEnv(), "AGENT_VAULT_TOKEN=x")
	if code := MainNamed("agent-vault vault run", nil, env, nil, nil, &stderr); code != ExitSetup {
		t.Errorf("code = %d", code)
	}
	if !strings.HasPrefix(stderr.String(), "agent-vault vault run: no command given") {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestSplitServices(t *testing.T) {
	for in, want := range map[string][]string{
		"github":           {"github"},
		" github , openai": {"github", "openai"},
	} {
		if got, err := splitServices(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("splitServices(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", " ", " , ", "a,", ",a", "a,,b", "a, ,b"} {
		if got, err := splitServices(in); err == nil {
			t.Errorf("splitServices(%q) = %q, want an error", in, got)
		}
	}
}
